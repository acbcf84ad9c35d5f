//! DQN: not written yet.
