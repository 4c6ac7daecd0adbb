//! berth kernel: the parking domain (operators, sites, spaces, devices, drivers, vehicles), the
//! services that enforce authorisation and tenancy, and the ports adapters implement.
//!
//! Deliberately absent: HTTP, SQL, MQTT and any vendor. Those live in `openapi/` and `adapters/`.

pub mod auth;
pub mod booking;
pub mod chat;
pub mod commit;
pub mod conversation;
pub mod device;
pub mod dialogue;
pub mod driver;
pub mod error;
pub mod feed;
pub mod geo;
pub mod handoff;
pub mod ids;
pub mod ingest;
pub mod language;
pub mod lifecycle;
pub mod live;
mod memo;
pub mod occupancy;
pub mod operator;
pub mod page;
pub mod payment;
pub mod plugin;
pub mod ports;
pub mod pricing;
pub mod privacy;
pub mod reject;
pub mod reminders;
pub mod rules;
pub mod search;
pub mod service;
pub mod site;
pub mod space;
mod validate;
pub mod vehicle_type;

pub use error::{KernelError, KernelResult, StoreError, ValidationError};
pub use service::Kernel;
