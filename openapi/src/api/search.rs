//! `/v1/search`: sites near a point with room for a stay, priced by their operators' rules.

use berth_kernel::search::{MAX_RADIUS_M, MAX_RESULTS, SearchOrder, SearchQuery};
use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, OpenApi};

use super::ApiTags;
use crate::dto::VehicleTypeDto;
use crate::problem::{ApiError, ApiResult};
use crate::rules_dto::SearchResults;
use crate::state::{AppState, BerthAuth};

pub struct SearchApi;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum SearchOrderDto {
    Distance,
    Price,
}

#[OpenApi(tag = "ApiTags::Search")]
impl SearchApi {
    /// Sites within `radius_m` of a point that have a space for the stay, nearest (or cheapest)
    /// first, each with its price under the operator's rules, distance, free spaces and how much
    /// to trust them. Drivers search every operator; an operator key searches its own sites.
    #[oai(path = "/v1/search", method = "get", operation_id = "search")]
    #[allow(clippy::too_many_arguments)]
    async fn search(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        /// Latitude, -90 to 90.
        lat: Query<f64>,
        /// Longitude, -180 to 180.
        lon: Query<f64>,
        /// 1 to 50000 metres (default 1000).
        radius_m: Query<Option<f64>>,
        /// Start of the stay (RFC 3339).
        start: Query<DateTime<Utc>>,
        /// End of the stay (RFC 3339), after `start`.
        end: Query<DateTime<Utc>>,
        /// Default `car`.
        vehicle_type: Query<Option<VehicleTypeDto>>,
        /// Only spaces with (`true`) or without (`false`) a charger.
        ev: Query<Option<bool>>,
        /// Only accessible (`true`) or only other (`false`) spaces.
        accessible: Query<Option<bool>>,
        /// Only sites whose price for the stay is at most this (minor units).
        max_price: Query<Option<i64>>,
        /// `distance` (default) or `price`.
        sort: Query<Option<SearchOrderDto>>,
        /// 1-100 (default 20).
        limit: Query<Option<u32>>,
    ) -> ApiResult<Json<SearchResults>> {
        // Query parameters a client got wrong are 400s that say which and why.
        let bad = |detail: String| ApiError::bad_request(detail);
        if !(-90.0..=90.0).contains(&lat.0) {
            return Err(bad("lat: must be between -90 and 90".into()));
        }
        if !(-180.0..=180.0).contains(&lon.0) {
            return Err(bad("lon: must be between -180 and 180".into()));
        }
        let radius_m = radius_m.0.unwrap_or(1000.0);
        if !radius_m.is_finite() || !(1.0..=MAX_RADIUS_M).contains(&radius_m) {
            return Err(bad(format!("radius_m: must be between 1 and {MAX_RADIUS_M} metres")));
        }
        if end.0 <= start.0 {
            return Err(bad("end: must be after start".into()));
        }
        if end.0 <= Utc::now() {
            return Err(bad("end: the stay is over already".into()));
        }
        let limit = limit.0.unwrap_or(20);
        if !(1..=MAX_RESULTS).contains(&limit) {
            return Err(bad(format!("limit: must be between 1 and {MAX_RESULTS}")));
        }
        if max_price.0.is_some_and(|max| max < 0) {
            return Err(bad("max_price: must not be negative".into()));
        }
        let query = SearchQuery {
            lat: lat.0,
            lon: lon.0,
            radius_m,
            start: start.0,
            end: end.0,
            vehicle_type: vehicle_type.0.map(Into::into).unwrap_or(berth_kernel::vehicle_type::VehicleType::Car),
            ev: ev.0,
            accessible: accessible.0,
            max_price_minor: max_price.0,
            order: match sort.0 {
                Some(SearchOrderDto::Price) => SearchOrder::Price,
                _ => SearchOrder::Distance,
            },
            limit,
        };
        let hits = state.kernel.search(&auth.0, query).await?;
        Ok(Json(SearchResults { items: hits.into_iter().map(Into::into).collect() }))
    }
}
