//! berth HTTP API: poem + poem-openapi. The only crate that knows poem. Handlers translate wire
//! types to kernel calls; errors leave as `application/problem+json`.

// `ApiError` is the response enum poem-openapi derives the spec from; every handler returns it,
// so its size is paid once per request either way.
#![allow(clippy::result_large_err)]

// `dto` first: its `mirror_enum!` is used by the API modules.
#[macro_use]
pub mod dto;
pub mod api;
mod csv_import;
pub mod metrics;
pub mod problem;
pub mod rules_dto;
pub mod server;
pub mod state;
pub mod tokens;

pub use server::{Listener, app, bind, spec_json};
pub use state::AppState;
