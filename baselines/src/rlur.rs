//! RLUR: not written yet.
