//! Tests that drive the real `rliv` binary live in `tests/`; their shared
//! helpers are in `tests/common`.
