//! Search: sites near a point with room for a stay, each with its price under the operator's
//! rules, distance, and how much to trust the availability.
//!
//! The spatial index (an R-tree of every site's location) is kept in step with this node's
//! site writes and rebuilt from the database when older than [`INDEX_MAX_AGE`], so other
//! nodes' changes appear within that time.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rstar::{AABB, PointDistance, RTree, RTreeObject};

use crate::auth::{Access, Principal};
use crate::error::{KernelError, KernelResult, ValidationError};
use crate::geo::GeoPoint;
use crate::ids::{OperatorId, SiteId};
use crate::pricing::Stay;
use crate::rules::{DriverFacts, Price};
use crate::service::{Kernel, now, operator_scope};
use crate::site::Site;
use crate::space::SpaceStatus;
use crate::vehicle_type::VehicleType;

/// How long this node trusts its index without rebuilding it from the database.
pub const INDEX_MAX_AGE: Duration = Duration::from_secs(30);
pub const MAX_RADIUS_M: f64 = 50_000.0;
pub const MAX_RESULTS: u32 = 100;
/// A window starting within this long counts as "now": free spaces come from live state.
const NOW_WINDOW: chrono::Duration = chrono::Duration::minutes(15);
/// Sites priced per search at most (nearest first).
const MAX_CANDIDATES: usize = 200;

/// One site in the index: its location in degrees (lon, lat).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexedSite {
    pub site_id: SiteId,
    pub operator_id: OperatorId,
    pub lon: f64,
    pub lat: f64,
}

impl RTreeObject for IndexedSite {
    type Envelope = AABB<[f64; 2]>;

    fn envelope(&self) -> Self::Envelope {
        AABB::from_point([self.lon, self.lat])
    }
}

impl PointDistance for IndexedSite {
    fn distance_2(&self, point: &[f64; 2]) -> f64 {
        (self.lon - point[0]).powi(2) + (self.lat - point[1]).powi(2)
    }
}

/// Every site's location, for radius queries.
#[derive(Default)]
pub struct SiteIndex {
    state: RwLock<Option<(Instant, RTree<IndexedSite>)>>,
}

impl SiteIndex {
    /// Sites within `radius_m` of `point` (`None`: the index needs rebuilding first).
    fn within(&self, point: GeoPoint, radius_m: f64) -> Option<Vec<(IndexedSite, f64)>> {
        let state = self.state.read().unwrap();
        let (built, tree) = state.as_ref()?;
        if built.elapsed() > INDEX_MAX_AGE {
            return None;
        }
        // A box in degrees that holds the circle; the exact distance filters after.
        let lat_span = radius_m / 111_320.0;
        let lon_span = radius_m / (111_320.0 * point.lat().to_radians().cos().max(0.01));
        let envelope = AABB::from_corners(
            [point.lon() - lon_span, point.lat() - lat_span],
            [point.lon() + lon_span, point.lat() + lat_span],
        );
        let mut hits: Vec<(IndexedSite, f64)> = tree
            .locate_in_envelope(&envelope)
            .filter_map(|site| {
                let location = GeoPoint::new(site.lat, site.lon).ok()?;
                let distance = point.distance_m(&location);
                (distance <= radius_m).then_some((*site, distance))
            })
            .collect();
        hits.sort_by(|a, b| a.1.total_cmp(&b.1));
        Some(hits)
    }

    fn rebuild(&self, sites: Vec<IndexedSite>) {
        *self.state.write().unwrap() = Some((Instant::now(), RTree::bulk_load(sites)));
    }

    /// Keeps the index in step with a site written on this node.
    pub(crate) fn upsert(&self, site: &Site) {
        if let Some((_, tree)) = self.state.write().unwrap().as_mut() {
            retain(tree, |entry| entry.site_id != site.id);
            tree.insert(IndexedSite {
                site_id: site.id,
                operator_id: site.operator_id,
                lon: site.details.location.lon(),
                lat: site.details.location.lat(),
            });
        }
    }

    pub(crate) fn remove(&self, site: SiteId) {
        if let Some((_, tree)) = self.state.write().unwrap().as_mut() {
            retain(tree, |entry| entry.site_id != site);
        }
    }
}

/// Keeps the entries `keep` accepts (site writes are rare; a rebuild is simple and exact).
fn retain(tree: &mut RTree<IndexedSite>, keep: impl Fn(&IndexedSite) -> bool) {
    *tree = RTree::bulk_load(tree.iter().filter(|entry| keep(entry)).copied().collect());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchOrder {
    Distance,
    Price,
}

#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub lat: f64,
    pub lon: f64,
    pub radius_m: f64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub vehicle_type: VehicleType,
    /// Only spaces with (`true`) or without (`false`) a charger.
    pub ev: Option<bool>,
    pub accessible: Option<bool>,
    pub max_price_minor: Option<i64>,
    pub order: SearchOrder,
    pub limit: u32,
}

/// One site in the results.
#[derive(Debug, Clone)]
pub struct SearchHit {
    pub site: Site,
    pub distance_m: f64,
    /// Spaces that fit the vehicle and filters and are free for the window.
    pub free_spaces: u32,
    /// Spaces that fit the vehicle and filters at all.
    pub matching_spaces: u32,
    /// The price under the rules in force; `None` with `unpriced` saying why.
    pub price: Option<Price>,
    pub rule_version: Option<u32>,
    pub unpriced: Option<String>,
    /// Mean confidence (0-1) of the free spaces' state; 1 for a future window.
    pub confidence: f64,
    /// Age of the oldest sensor reading behind `free_spaces`, when any is live.
    pub data_age_secs: Option<i64>,
}

impl Kernel {
    pub(crate) fn site_index(&self) -> &SiteIndex {
        &self.site_index
    }

    /// Sites near a point with room for the stay, priced, nearest (or cheapest) first. Drivers
    /// search every operator's sites; an operator key searches its own.
    pub async fn search(&self, caller: &Principal, query: SearchQuery) -> KernelResult<Vec<SearchHit>> {
        let only_operator = match caller {
            Principal::Driver { .. } => None,
            other => Some(operator_scope(other, Access::Read)?),
        };
        let point = GeoPoint::new(query.lat, query.lon)?;
        if !query.radius_m.is_finite() || !(1.0..=MAX_RADIUS_M).contains(&query.radius_m) {
            return Err(ValidationError::new("radius_m", format!("must be between 1 and {MAX_RADIUS_M} metres")).into());
        }
        if query.end <= query.start {
            return Err(ValidationError::new("end", "must be after start").into());
        }
        if !(1..=MAX_RESULTS).contains(&query.limit) {
            return Err(ValidationError::new("limit", format!("must be between 1 and {MAX_RESULTS}")).into());
        }
        let at = now();
        let candidates = match self.site_index().within(point, query.radius_m) {
            Some(hits) => hits,
            None => {
                let sites = self.store().list_site_locations().await?;
                self.site_index().rebuild(sites);
                self.site_index().within(point, query.radius_m).unwrap_or_default()
            }
        };
        let mut hits = Vec::new();
        for (entry, distance_m) in candidates.into_iter().take(MAX_CANDIDATES) {
            if only_operator.is_some_and(|operator| operator != entry.operator_id) {
                continue;
            }
            let Some(site) = self.store().get_site(entry.operator_id, entry.site_id).await? else { continue };
            if !site.details.allowed_vehicle_types.contains(&query.vehicle_type) {
                continue;
            }
            let Some(hit) = self.search_hit(&query, site, distance_m, at).await? else { continue };
            if let Some(max) = query.max_price_minor
                && hit.price.as_ref().is_none_or(|price| price.total_minor > max)
            {
                continue;
            }
            hits.push(hit);
        }
        if query.order == SearchOrder::Price {
            hits.sort_by_key(|hit| {
                (hit.price.as_ref().map_or(i64::MAX, |price| price.total_minor), hit.distance_m as i64)
            });
        }
        hits.truncate(query.limit as usize);
        Ok(hits)
    }

    async fn search_hit(
        &self,
        query: &SearchQuery,
        site: Site,
        distance_m: f64,
        at: DateTime<Utc>,
    ) -> KernelResult<Option<SearchHit>> {
        let availability = self.site_availability_for(site.operator_id, site.id).await?;
        let booked: std::collections::HashSet<crate::ids::SpaceId> =
            self.store().booked_spaces(site.id, query.start, query.end, at).await?.into_iter().collect();
        let live_window = query.start <= at + NOW_WINDOW;
        let fits = |space: &crate::space::Space| {
            space.details.vehicle_type == query.vehicle_type
                && query.ev.is_none_or(|ev| space.details.ev_charger == ev)
                && query.accessible.is_none_or(|accessible| space.details.accessible == accessible)
        };
        let (mut matching, mut free, mut confidence_sum) = (0_u32, 0_u32, 0.0_f64);
        let mut oldest: Option<i64> = None;
        for (space, shown) in &availability.spaces {
            if !fits(space) {
                continue;
            }
            matching += 1;
            // Now: what the sensors show; later: every open space. Either way, not one a
            // booking holds for part of the window.
            let available = !booked.contains(&space.id)
                && if live_window { shown.status == SpaceStatus::Free } else { shown.status != SpaceStatus::Closed };
            if !available {
                continue;
            }
            free += 1;
            if live_window {
                confidence_sum += shown.confidence;
                if let Some(age) = shown.data_age_secs {
                    oldest = Some(oldest.map_or(age, |oldest| oldest.max(age)));
                }
            } else {
                confidence_sum += 1.0;
            }
        }
        if free == 0 {
            return Ok(None);
        }
        let stay = Stay {
            space: None,
            availability: Some(&availability),
            vehicle_type: query.vehicle_type,
            start: query.start,
            end: query.end,
            driver: DriverFacts::default(),
        };
        let (price, rule_version, unpriced) = match self.price_stay(true, site.operator_id, &site, stay, at).await {
            Ok(priced) => (Some(priced.price), Some(priced.version), None),
            // The rules refuse this stay here: not a result.
            Err(KernelError::NotAllowed(_)) => return Ok(None),
            Err(KernelError::Conflict(reason) | KernelError::RuleFailed(reason)) => (None, None, Some(reason)),
            Err(other) => return Err(other),
        };
        Ok(Some(SearchHit {
            site,
            distance_m,
            free_spaces: free,
            matching_spaces: matching,
            price,
            rule_version,
            unpriced,
            confidence: confidence_sum / f64::from(free),
            data_age_secs: oldest,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_finds_sites_within_the_radius_nearest_first() {
        let index = SiteIndex::default();
        let site =
            |lat: f64, lon: f64| IndexedSite { site_id: SiteId::new(), operator_id: OperatorId::new(), lon, lat };
        // Porto: Trindade, Bolhão (~450 m), and Gaia (~1.6 km).
        let (trindade, bolhao, gaia) = (site(41.1507, -8.6096), site(41.1493, -8.6055), site(41.1380, -8.6110));
        index.rebuild(vec![gaia, trindade, bolhao]);
        let near = index.within(GeoPoint::new(41.1507, -8.6096).unwrap(), 1000.0).unwrap();
        let found: Vec<SiteId> = near.iter().map(|(site, _)| site.site_id).collect();
        assert_eq!(found, [trindade.site_id, bolhao.site_id]);
        assert!((300.0..500.0).contains(&near[1].1), "{}", near[1].1);
        let wide = index.within(GeoPoint::new(41.1507, -8.6096).unwrap(), 5000.0).unwrap();
        assert_eq!(wide.len(), 3);
        index.remove(gaia.site_id);
        assert_eq!(index.within(GeoPoint::new(41.1507, -8.6096).unwrap(), 5000.0).unwrap().len(), 2);
    }
}
