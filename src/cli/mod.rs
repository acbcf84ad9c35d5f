//! The commands' arguments and handlers that are more than a call into the
//! library: `main.rs` only parses and dispatches.

pub(crate) mod dump;
pub(crate) mod experiment;
pub(crate) mod replay;
pub(crate) mod sim;
pub(crate) mod views;
