//! DeepFM: not written yet.
