//! TD3: not written yet.
