//! The `/v1` operations, one module per resource. Handlers only translate: wire types in,
//! one kernel call, wire types out.

pub mod bookings;
pub mod chat;
pub mod devices;
pub mod drivers;
pub mod handoffs;
pub mod keys;
pub mod live;
pub mod nlu;
pub mod operators;
pub mod plugins;
pub mod rules;
pub mod search;
pub mod sites;
pub mod spaces;

use berth_kernel::page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageRequest};
use poem_openapi::payload::Json;
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Tags};
use uuid::Uuid;

use crate::problem::{ApiError, ApiResult};

#[derive(Tags)]
pub enum ApiTags {
    /// Tenants of the platform (platform admin).
    Operators,
    /// API keys: create, list, revoke.
    Keys,
    /// Lots, garages and on-street zones.
    Sites,
    /// Parking spaces inside sites.
    Spaces,
    /// Sensors and their binding to spaces.
    Devices,
    /// Driver accounts and vehicles.
    Drivers,
    /// Sensor data in (network-server webhooks), live availability, overrides, history.
    Live,
    /// WebAssembly plugins: sensor decoders, payment providers, chat channels (platform admin).
    Plugins,
    /// Operators' pricing and policy rules: rule sets, versions, tests, publish, rollback, simulation.
    Rules,
    /// Prices for stays under the rules in force.
    Quotes,
    /// Finding a site with room for a stay.
    Search,
    /// Drivers' bookings of spaces.
    Bookings,
    /// Conversations with drivers: language understanding and chat channels.
    Chat,
}

/// `201 Created` with the new resource.
#[derive(ApiResponse)]
pub enum Created<T: ToJSON> {
    #[oai(status = 201)]
    Created(Json<T>),
}

/// `204 No Content`.
#[derive(ApiResponse)]
pub enum Deleted {
    #[oai(status = 204)]
    NoContent,
}

/// Parses the `after` cursor and `limit` of a list operation.
pub fn page_request(after: Option<String>, limit: Option<u32>) -> ApiResult<PageRequest> {
    let after = after
        .filter(|text| !text.is_empty())
        .map(|text| Uuid::parse_str(&text))
        .transpose()
        .map_err(|_| ApiError::bad_request("after: not a cursor returned by this API (use next_cursor)"))?;
    let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit: must be between 1 and {MAX_PAGE_SIZE}")));
    }
    Ok(PageRequest { after, limit })
}
