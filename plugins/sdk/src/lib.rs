//! The berth plugin SDK: the types a sensor decoder returns, a bounds-checked byte reader, and
//! the corpus check vendors run against their examples. Plugin crates depend only on this.
//!
//! Deliberately absent: any I/O. A decoder is a pure function of (model, f-port, bytes).

pub mod bytes;
pub mod corpus;
pub mod sensor;

pub use sensor::{DecodeError, Decoded, MessageKind, Occupancy, Reading, Uplink};
