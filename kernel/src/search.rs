//! Search: sites near a point with room for a stay, each with its price under the operator's
//! rules, distance, and how much to trust the availability.
//!
//! Search reads memory, not the database, except for one query of the bookings in the window:
//! - the spatial index (an R-tree of every site, with the site itself) is kept in step with
//!   this node's site writes and rebuilt from the database when older than [`INDEX_MAX_AGE`],
//!   so other nodes' site changes appear within that time;
//! - each site's spaces and their live rows are a [`SiteSnapshot`], with the live feed's
//!   changes (this node's, and other nodes' through the fan-out) applied on top as they come.
//!   A snapshot is reloaded in the background after [`SNAPSHOT_REFRESH`], dropped by this
//!   node's space writes, and never used past [`SNAPSHOT_MAX_AGE`];
//! - rule sets, versions and compiled rules come from the pricing caches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rstar::{AABB, PointDistance, RTree, RTreeObject};

use crate::auth::{Access, Principal};
use crate::error::{KernelError, KernelResult, ValidationError};
use crate::geo::GeoPoint;
use crate::ids::{SiteId, SpaceId};
use crate::ingest::Availability;
use crate::live::{Effective, SpaceLive};
use crate::pricing::Stay;
use crate::rules::{DriverFacts, Price};
use crate::service::{Kernel, now, operator_scope};
use crate::site::Site;
use crate::space::{Space, SpaceStatus};
use crate::vehicle_type::VehicleType;

/// How long this node trusts its index without rebuilding it from the database.
pub const INDEX_MAX_AGE: Duration = Duration::from_secs(30);
/// A site's snapshot older than this is reloaded in the background (while still served).
pub const SNAPSHOT_REFRESH: Duration = Duration::from_secs(30);
/// A snapshot older than this is reloaded before it is used.
pub const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(120);
/// What a site's spaces show is recomputed at least this often (data ages, stale sensors,
/// expired overrides), and whenever the feed changed one of them.
const VIEW_MAX_AGE: Duration = Duration::from_secs(1);
pub const MAX_RADIUS_M: f64 = 50_000.0;
pub const MAX_RESULTS: u32 = 100;
/// A window starting within this long counts as "now": free spaces come from live state.
const NOW_WINDOW: chrono::Duration = chrono::Duration::minutes(15);
/// Sites priced per search at most (nearest first).
const MAX_CANDIDATES: usize = 200;

/// One site in the index: its location in degrees (lon, lat), and the site.
#[derive(Debug, Clone)]
pub struct IndexedSite {
    pub site: Arc<Site>,
    pub lon: f64,
    pub lat: f64,
}

impl IndexedSite {
    pub fn of(site: Site) -> Self {
        let (lon, lat) = (site.details.location.lon(), site.details.location.lat());
        Self { site: Arc::new(site), lon, lat }
    }
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
    fn within(&self, point: GeoPoint, radius_m: f64) -> Option<Vec<(Arc<Site>, f64)>> {
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
        let mut hits: Vec<(Arc<Site>, f64)> = tree
            .locate_in_envelope(&envelope)
            .filter_map(|entry| {
                let distance = point.distance_m(&entry.site.details.location);
                (distance <= radius_m).then(|| (entry.site.clone(), distance))
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
            retain(tree, |entry| entry.site.id != site.id);
            tree.insert(IndexedSite::of(site.clone()));
        }
    }

    pub(crate) fn remove(&self, site: SiteId) {
        if let Some((_, tree)) = self.state.write().unwrap().as_mut() {
            retain(tree, |entry| entry.site.id != site);
        }
    }
}

/// Keeps the entries `keep` accepts (site writes are rare; a rebuild is simple and exact).
fn retain(tree: &mut RTree<IndexedSite>, keep: impl Fn(&IndexedSite) -> bool) {
    *tree = RTree::bulk_load(tree.iter().filter(|entry| keep(entry)).cloned().collect());
}

/// A site's spaces and their live rows as loaded, and what they show (recomputed as needed).
struct SiteSnapshot {
    loaded: Instant,
    /// The feed's newest sequence number before the rows were read: later events apply on top.
    loaded_seq: u64,
    rows: Vec<(Arc<Space>, SpaceLive)>,
    refreshing: AtomicBool,
    /// The last computed view: when, up to which of the site's feed events, and the view.
    view: Mutex<Option<(Instant, u64, Arc<Availability>)>>,
}

/// The live feed's changes since the snapshots were loaded: per site, each changed space's
/// newest shown state (with the event's sequence number and time).
#[derive(Default)]
struct FeedChanges {
    /// The newest feed event applied; `None` before the first catch-up.
    seq: Option<u64>,
    sites: HashMap<SiteId, SiteChanges>,
}

type SiteChanges = HashMap<SpaceId, (u64, Effective, DateTime<Utc>)>;

/// Search's copy of every searched site's spaces; see the module documentation.
#[derive(Default)]
pub struct SiteSnapshots {
    sites: RwLock<HashMap<SiteId, Arc<SiteSnapshot>>>,
    changes: Mutex<FeedChanges>,
    /// Counts this node's space writes: rows read before one are not kept.
    generation: std::sync::atomic::AtomicU64,
}

impl SiteSnapshots {
    /// Drops a site's snapshot after a write to its spaces on this node: the next search reads
    /// them again.
    pub(crate) fn forget(&self, site: SiteId) {
        let mut sites = self.sites.write().unwrap();
        self.generation.fetch_add(1, Ordering::AcqRel);
        sites.remove(&site);
    }

    pub(crate) fn forget_all(&self) {
        let mut sites = self.sites.write().unwrap();
        self.generation.fetch_add(1, Ordering::AcqRel);
        sites.clear();
    }

    /// Applies the feed's events since the last call. If the feed no longer reaches back that
    /// far, every snapshot is dropped, since some change may have been missed.
    fn catch_up(&self, feed: &crate::feed::LiveFeed) {
        let mut changes = self.changes.lock().unwrap();
        let Some(seq) = changes.seq else {
            changes.seq = Some(feed.last_seq());
            return;
        };
        match feed.since(seq) {
            Some(events) => {
                for event in events {
                    changes
                        .sites
                        .entry(event.site_id)
                        .or_default()
                        .insert(event.space_id, (event.seq, event.shown.clone(), event.at));
                    changes.seq = Some(event.seq);
                }
            }
            None => {
                changes.sites.clear();
                changes.seq = Some(feed.last_seq());
                drop(changes);
                self.forget_all();
            }
        }
    }

    /// What each site's spaces show now, loading the sites this node has no usable snapshot of.
    async fn views(&self, kernel: &Kernel, sites: &[Arc<Site>]) -> KernelResult<Vec<Arc<Availability>>> {
        self.catch_up(kernel.feed());
        let mut snapshots: Vec<Option<Arc<SiteSnapshot>>> = {
            let known = self.sites.read().unwrap();
            sites
                .iter()
                .map(|site| known.get(&site.id).filter(|s| s.loaded.elapsed() < SNAPSHOT_MAX_AGE).cloned())
                .collect()
        };
        let missing: Vec<usize> = (0..sites.len()).filter(|&index| snapshots[index].is_none()).collect();
        let loaded =
            futures_util::future::join_all(missing.iter().map(|&index| self.load(kernel, &sites[index]))).await;
        for (index, snapshot) in missing.into_iter().zip(loaded) {
            snapshots[index] = Some(snapshot?);
        }
        let (at, config) = (now(), kernel.live_config());
        let mut views = Vec::with_capacity(sites.len());
        for (site, snapshot) in sites.iter().zip(snapshots) {
            let snapshot = snapshot.expect("invariant: every missing snapshot was loaded above");
            if snapshot.loaded.elapsed() > SNAPSHOT_REFRESH && !snapshot.refreshing.swap(true, Ordering::AcqRel) {
                let (kernel, site) = (kernel.clone(), site.clone());
                tokio::spawn(async move {
                    if let Err(error) = kernel.site_snapshots.load(&kernel, &site).await {
                        tracing::warn!(site = %site.id, %error, "search snapshot refresh failed; the old one serves");
                    }
                });
            }
            views.push(self.view(site.id, &snapshot, at, &config));
        }
        Ok(views)
    }

    /// Reads a site's spaces and live rows, and keeps them as its snapshot.
    async fn load(&self, kernel: &Kernel, site: &Site) -> KernelResult<Arc<SiteSnapshot>> {
        let loaded_seq = kernel.feed().last_seq();
        let generation = self.generation.load(Ordering::Acquire);
        let rows = kernel.store().list_site_live(site.operator_id, site.id).await?;
        let snapshot = Arc::new(SiteSnapshot {
            loaded: Instant::now(),
            loaded_seq,
            rows: rows.into_iter().map(|(space, live)| (Arc::new(space), live)).collect(),
            refreshing: AtomicBool::new(false),
            view: Mutex::new(None),
        });
        {
            // A space write since the read may have changed them: keep them for this answer only.
            let mut sites = self.sites.write().unwrap();
            if self.generation.load(Ordering::Acquire) != generation {
                return Ok(snapshot);
            }
            sites.insert(site.id, snapshot.clone());
        }
        // Changes the rows already hold are no longer needed.
        let mut changes = self.changes.lock().unwrap();
        if let Some(site_changes) = changes.sites.get_mut(&site.id) {
            site_changes.retain(|_, (seq, ..)| *seq > loaded_seq);
            if site_changes.is_empty() {
                changes.sites.remove(&site.id);
            }
        }
        Ok(snapshot)
    }

    /// The site's view: the last one while it is fresh and no change came since, else computed.
    fn view(
        &self,
        site: SiteId,
        snapshot: &SiteSnapshot,
        at: DateTime<Utc>,
        config: &crate::live::LiveConfig,
    ) -> Arc<Availability> {
        let (newest, changed): (u64, Option<SiteChanges>) = {
            let changes = self.changes.lock().unwrap();
            let site_changes = changes.sites.get(&site);
            let newest = site_changes.and_then(|changed| changed.values().map(|(seq, ..)| *seq).max()).unwrap_or(0);
            let cached = snapshot.view.lock().unwrap();
            if let Some((computed, upto, view)) = cached.as_ref()
                && computed.elapsed() < VIEW_MAX_AGE
                && *upto >= newest
            {
                return view.clone();
            }
            (newest, site_changes.cloned())
        };
        let spaces = snapshot.rows.iter().map(|(space, live)| {
            let changed = changed.as_ref().and_then(|changed| changed.get(&space.id));
            let shown = match changed {
                Some((seq, shown, when)) if *seq > snapshot.loaded_seq => {
                    let mut shown = shown.clone();
                    shown.data_age_secs = shown.data_age_secs.map(|age| age + (at - *when).num_seconds().max(0));
                    if space.state.status == SpaceStatus::Closed && !shown.overridden {
                        shown.status = SpaceStatus::Closed;
                    }
                    shown
                }
                _ => crate::ingest::shown(space, live, at, config),
            };
            (space.clone(), shown)
        });
        let view = Arc::new(Availability::of(site, at, spaces));
        *snapshot.view.lock().unwrap() = Some((Instant::now(), newest, view.clone()));
        view
    }
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
    /// Every operator's sites within `radius_m` of `point`, with their distances, from the
    /// R-tree (rebuilt from the database when it is too old).
    pub(crate) async fn sites_within(&self, point: GeoPoint, radius_m: f64) -> KernelResult<Vec<(Arc<Site>, f64)>> {
        if let Some(hits) = self.site_index().within(point, radius_m) {
            return Ok(hits);
        }
        let sites = self.store().list_all_sites().await?;
        self.site_index().rebuild(sites.into_iter().map(IndexedSite::of).collect());
        Ok(self.site_index().within(point, radius_m).unwrap_or_default())
    }

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
        let candidates = self.sites_within(point, query.radius_m).await?;
        let candidates: Vec<(Arc<Site>, f64)> = candidates
            .into_iter()
            .filter(|(site, _)| {
                only_operator.is_none_or(|operator| operator == site.operator_id)
                    && site.details.allowed_vehicle_types.contains(&query.vehicle_type)
            })
            .take(MAX_CANDIDATES)
            .collect();
        // Nearest first needs only the nearest sites that qualify: they are priced a few more
        // than the answer still lacks at a time. Cheapest first prices them all.
        let limit = query.limit as usize;
        let mut hits = Vec::new();
        let mut rest = candidates.as_slice();
        while !rest.is_empty() {
            let take = match query.order {
                SearchOrder::Distance => (limit - hits.len() + 4).min(rest.len()),
                SearchOrder::Price => rest.len(),
            };
            let (batch, after) = rest.split_at(take);
            rest = after;
            hits.extend(self.search_batch(&query, batch, at).await?);
            if query.order == SearchOrder::Distance && hits.len() >= limit {
                break;
            }
        }
        if query.order == SearchOrder::Price {
            hits.sort_by_key(|hit| {
                (hit.price.as_ref().map_or(i64::MAX, |price| price.total_minor), hit.distance_m as i64)
            });
        }
        hits.truncate(query.limit as usize);
        Ok(hits)
    }

    /// The sites of `batch` with room for the stay (and within `max_price`), priced, in order.
    async fn search_batch(
        &self,
        query: &SearchQuery,
        batch: &[(Arc<Site>, f64)],
        at: DateTime<Utc>,
    ) -> KernelResult<Vec<SearchHit>> {
        let sites: Vec<Arc<Site>> = batch.iter().map(|(site, _)| site.clone()).collect();
        let views = self.site_snapshots.views(self, &sites).await?;
        let site_ids: Vec<SiteId> = sites.iter().map(|site| site.id).collect();
        let mut booked: HashMap<SiteId, std::collections::HashSet<SpaceId>> = HashMap::new();
        for (site, space) in self.store().booked_spaces(&site_ids, query.start, query.end, at).await? {
            booked.entry(site).or_default().insert(space);
        }
        let no_bookings = std::collections::HashSet::new();
        let roomy: Vec<(&Site, f64, &Availability, Room)> = batch
            .iter()
            .zip(&views)
            .filter_map(|((site, distance_m), availability)| {
                let room = room(query, availability, booked.get(&site.id).unwrap_or(&no_bookings), at)?;
                Some((site.as_ref(), *distance_m, availability.as_ref(), room))
            })
            .collect();
        let stays = roomy
            .iter()
            .map(|(site, _, availability, _)| {
                let stay = Stay {
                    space: None,
                    availability: Some(availability),
                    vehicle_type: query.vehicle_type,
                    start: query.start,
                    end: query.end,
                    driver: DriverFacts::default(),
                };
                (*site, stay)
            })
            .collect();
        let priced = self.price_stays(true, stays, at).await;
        let mut hits = Vec::with_capacity(roomy.len());
        for ((site, distance_m, _, room), priced) in roomy.into_iter().zip(priced) {
            let (price, rule_version, unpriced) = match priced {
                Ok(priced) => (Some(priced.price), Some(priced.version), None),
                // The rules refuse this stay here: not a result.
                Err(KernelError::NotAllowed(_)) => continue,
                Err(KernelError::Conflict(reason) | KernelError::RuleFailed(reason)) => (None, None, Some(reason)),
                Err(other) => return Err(other),
            };
            if let Some(max) = query.max_price_minor
                && price.as_ref().is_none_or(|price| price.total_minor > max)
            {
                continue;
            }
            hits.push(SearchHit {
                site: site.clone(),
                distance_m,
                free_spaces: room.free,
                matching_spaces: room.matching,
                price,
                rule_version,
                unpriced,
                confidence: room.confidence_sum / f64::from(room.free),
                data_age_secs: room.oldest,
            });
        }
        Ok(hits)
    }
}

/// A site's spaces that fit the query, and those of them free for its window.
struct Room {
    matching: u32,
    free: u32,
    confidence_sum: f64,
    oldest: Option<i64>,
}

/// The site's room for the query's stay; `None` when no fitting space is free.
fn room(
    query: &SearchQuery,
    availability: &Availability,
    booked: &std::collections::HashSet<SpaceId>,
    at: DateTime<Utc>,
) -> Option<Room> {
    let live_window = query.start <= at + NOW_WINDOW;
    let fits = |space: &Space| {
        space.details.vehicle_type == query.vehicle_type
            && query.ev.is_none_or(|ev| space.details.ev_charger == ev)
            && query.accessible.is_none_or(|accessible| space.details.accessible == accessible)
    };
    let mut room = Room { matching: 0, free: 0, confidence_sum: 0.0, oldest: None };
    for (space, shown) in &availability.spaces {
        if !fits(space) {
            continue;
        }
        room.matching += 1;
        // Now: what the sensors show; later: every open space. Either way, not one a booking
        // holds for part of the window.
        let available = !booked.contains(&space.id)
            && if live_window { shown.status == SpaceStatus::Free } else { shown.status != SpaceStatus::Closed };
        if !available {
            continue;
        }
        room.free += 1;
        if live_window {
            room.confidence_sum += shown.confidence;
            if let Some(age) = shown.data_age_secs {
                room.oldest = Some(room.oldest.map_or(age, |oldest| oldest.max(age)));
            }
        } else {
            room.confidence_sum += 1.0;
        }
    }
    (room.free > 0).then_some(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_finds_sites_within_the_radius_nearest_first() {
        let index = SiteIndex::default();
        let site = |lat: f64, lon: f64| {
            let input = crate::site::SiteInput {
                kind: Some(crate::site::SiteKind::OffStreet),
                name: "Lot".into(),
                lat,
                lon,
                timezone: "Europe/Lisbon".into(),
                currency: "EUR".into(),
                ..crate::site::SiteInput::default()
            };
            let (details, at) = (input.validate().unwrap(), now());
            IndexedSite::of(Site {
                id: SiteId::new(),
                operator_id: crate::ids::OperatorId::new(),
                details,
                created_at: at,
                updated_at: at,
            })
        };
        // Porto: Trindade, Bolhão (~450 m), and Gaia (~1.6 km).
        let (trindade, bolhao, gaia) = (site(41.1507, -8.6096), site(41.1493, -8.6055), site(41.1380, -8.6110));
        let ids = [trindade.site.id, bolhao.site.id, gaia.site.id];
        index.rebuild(vec![gaia, trindade, bolhao]);
        let near = index.within(GeoPoint::new(41.1507, -8.6096).unwrap(), 1000.0).unwrap();
        let found: Vec<SiteId> = near.iter().map(|(site, _)| site.id).collect();
        assert_eq!(found, [ids[0], ids[1]]);
        assert!((300.0..500.0).contains(&near[1].1), "{}", near[1].1);
        let wide = index.within(GeoPoint::new(41.1507, -8.6096).unwrap(), 5000.0).unwrap();
        assert_eq!(wide.len(), 3);
        index.remove(ids[2]);
        assert_eq!(index.within(GeoPoint::new(41.1507, -8.6096).unwrap(), 5000.0).unwrap().len(), 2);
    }
}
