//! The P2P node (in progress): its wire format first.

pub mod wire;
