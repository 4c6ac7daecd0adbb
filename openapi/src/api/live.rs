//! Ingest webhooks (The Things Stack, ChirpStack, native), live availability, overrides,
//! space history and device health.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_kernel::feed::{LiveEvent, LiveFeed};
use berth_kernel::geo::BoundingBox;
use berth_kernel::ids::{DeviceId, SiteId, SpaceId};
use berth_kernel::ingest::{Availability, IngestReport, OverrideInput, SiteSnapshot, SiteSubscription};
use berth_kernel::live::{DeviceHealth, Effective, SpaceEvent};
use berth_kernel::{Kernel, KernelError};
use berth_lorawan::{Envelope, EnvelopeError};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{Binary, EventStream, Json};
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiRequest, ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::{ApiTags, Deleted};
use crate::dto::SpaceStatusDto;
use crate::problem::{ApiError, ApiResult};
use crate::state::{AppState, BerthAuth};

/// A network server's JSON body, kept raw: signatures and quirks live in the bytes.
#[derive(ApiRequest)]
pub enum RawJson {
    #[oai(content_type = "application/json")]
    Json(Binary<Vec<u8>>),
}

impl RawJson {
    fn bytes(&self) -> &[u8] {
        let RawJson::Json(Binary(bytes)) = self;
        bytes
    }
}

#[derive(Debug, Clone, Object)]
pub struct IngestView {
    /// `changed`, `refreshed`, `duplicate`, `out_of_order`, `unbound` or `ignored`.
    pub result: String,
    #[oai(skip_serializing_if_is_none)]
    pub device_id: Option<Uuid>,
    #[oai(skip_serializing_if_is_none)]
    pub space_id: Option<Uuid>,
    /// The space's shown status after this uplink.
    #[oai(skip_serializing_if_is_none)]
    pub status: Option<SpaceStatusDto>,
    #[oai(skip_serializing_if_is_none)]
    pub confidence: Option<f64>,
    /// Why a message was ignored.
    #[oai(skip_serializing_if_is_none)]
    pub detail: Option<String>,
}

impl From<IngestReport> for IngestView {
    fn from(report: IngestReport) -> Self {
        Self {
            result: report.result.as_str().to_owned(),
            device_id: Some(report.device_id.as_uuid()),
            space_id: report.space_id.map(|id| id.as_uuid()),
            status: report.shown.as_ref().map(|shown| shown.status.into()),
            confidence: report.shown.as_ref().map(|shown| shown.confidence),
            detail: None,
        }
    }
}

#[derive(ApiResponse)]
pub enum Accepted {
    /// The uplink was taken in (or deliberately ignored); `result` says what it did.
    #[oai(status = 202)]
    Accepted(Json<IngestView>),
}

/// A space's shown state with the evidence behind it.
#[derive(Debug, Clone, Object)]
pub struct LiveSpaceView {
    pub id: Uuid,
    pub code: String,
    pub status: SpaceStatusDto,
    /// 0 (no idea) to 1 (certain).
    pub confidence: f64,
    /// Seconds since the sensor was last heard; absent if never.
    #[oai(skip_serializing_if_is_none)]
    pub data_age_secs: Option<i64>,
    pub stale: bool,
    pub flapping: bool,
    pub overridden: bool,
}

fn live_view(space: &berth_kernel::space::Space, shown: &Effective) -> LiveSpaceView {
    LiveSpaceView {
        id: space.id.as_uuid(),
        code: space.details.code.clone(),
        status: shown.status.into(),
        confidence: shown.confidence,
        data_age_secs: shown.data_age_secs,
        stale: shown.stale,
        flapping: shown.flapping,
        overridden: shown.overridden,
    }
}

#[derive(Debug, Clone, Object)]
pub struct AvailabilityView {
    pub site_id: Uuid,
    pub at: DateTime<Utc>,
    pub total: u64,
    /// Spaces per shown status (`free`, `occupied`, `closed`, `unknown`).
    pub by_status: BTreeMap<String, u64>,
    /// Free spaces per vehicle type.
    pub free_by_vehicle_type: BTreeMap<String, u64>,
    pub spaces: Vec<LiveSpaceView>,
}

#[derive(Debug, Clone, Object)]
pub struct OverrideRequest {
    /// The status to show.
    pub status: SpaceStatusDto,
    /// Why, for the audit log (1-500 characters).
    pub reason: String,
    /// When the override ends; absent: until cleared.
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Object)]
pub struct SpaceEventView {
    pub id: Uuid,
    /// `sensed`, `override_set` or `override_cleared`.
    pub kind: String,
    pub from: SpaceStatusDto,
    pub to: SpaceStatusDto,
    pub at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    #[oai(skip_serializing_if_is_none)]
    pub device_id: Option<Uuid>,
    #[oai(skip_serializing_if_is_none)]
    pub detail: Option<String>,
}

impl From<SpaceEvent> for SpaceEventView {
    fn from(event: SpaceEvent) -> Self {
        Self {
            id: event.id,
            kind: event.kind.as_str().to_owned(),
            from: event.from.into(),
            to: event.to.into(),
            at: event.at,
            recorded_at: event.recorded_at,
            device_id: event.device_id.map(|id| id.as_uuid()),
            detail: event.detail,
        }
    }
}

#[derive(Debug, Clone, Object)]
pub struct SpaceHistory {
    /// Newest first.
    pub items: Vec<SpaceEventView>,
}

#[derive(Debug, Clone, Object)]
pub struct DeviceHealthView {
    #[oai(skip_serializing_if_is_none)]
    pub last_seen: Option<DateTime<Utc>>,
    #[oai(skip_serializing_if_is_none)]
    pub battery_mv: Option<u32>,
    #[oai(skip_serializing_if_is_none)]
    pub temperature_c: Option<f64>,
    /// The vendor's decoded object of the last message.
    #[oai(skip_serializing_if_is_none)]
    pub last_decoded: Option<serde_json::Value>,
    #[oai(skip_serializing_if_is_none)]
    pub last_error: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub last_error_at: Option<DateTime<Utc>>,
    pub accepted: u64,
    /// Rejected messages by reason.
    pub rejected: BTreeMap<String, u64>,
}

impl From<DeviceHealth> for DeviceHealthView {
    fn from(health: DeviceHealth) -> Self {
        Self {
            last_seen: health.last_seen,
            battery_mv: health.battery_mv,
            temperature_c: health.temperature_c,
            last_decoded: health.last_object_json.and_then(|text| serde_json::from_str(&text).ok()),
            last_error: health.last_error,
            last_error_at: health.last_error_at,
            accepted: health.accepted,
            rejected: health.rejected,
        }
    }
}

/// One server-sent event.
#[derive(Debug, Clone, Object)]
pub struct StreamItem {
    /// `snapshot` or `space`.
    pub kind: String,
    /// The event id, as in the SSE `id:` field (send it back as `Last-Event-ID`).
    pub id: String,
    /// The site's availability (the snapshot of a site stream).
    #[oai(skip_serializing_if_is_none)]
    pub snapshot: Option<AvailabilityView>,
    /// Every site's availability (the snapshot of an area stream).
    #[oai(skip_serializing_if_is_none)]
    pub sites: Option<Vec<AvailabilityView>>,
    #[oai(skip_serializing_if_is_none)]
    pub space: Option<SpaceChangeView>,
    /// This item already rendered as JSON (shared between streams).
    #[oai(skip)]
    pub rendered: Option<Arc<str>>,
}

/// What a space shows now.
#[derive(Debug, Clone, Object)]
pub struct SpaceChangeView {
    pub id: Uuid,
    pub site_id: Uuid,
    pub status: SpaceStatusDto,
    pub confidence: f64,
    pub stale: bool,
    pub flapping: bool,
    pub overridden: bool,
    pub at: DateTime<Utc>,
}

/// An item of `kind` with nothing in it yet.
fn stream_item(kind: &str, id: String) -> StreamItem {
    StreamItem { kind: kind.into(), id, snapshot: None, sites: None, space: None, rendered: None }
}

impl StreamItem {
    /// The item's JSON, as an event's `data`.
    fn json(&self) -> String {
        serde_json::to_string(&self.to_json()).unwrap_or_default()
    }
}

fn change_item(feed: &LiveFeed, event: &LiveEvent) -> StreamItem {
    StreamItem {
        space: Some(SpaceChangeView {
            id: event.space_id.as_uuid(),
            site_id: event.site_id.as_uuid(),
            status: event.shown.status.into(),
            confidence: event.shown.confidence,
            stale: event.shown.stale,
            flapping: event.shown.flapping,
            overridden: event.shown.overridden,
            at: event.at,
        }),
        ..stream_item("space", feed.event_id(event.seq))
    }
}

fn availability_view(availability: &Availability) -> AvailabilityView {
    AvailabilityView {
        site_id: availability.site_id.as_uuid(),
        at: availability.at,
        total: availability.spaces.len() as u64,
        by_status: availability.counts.iter().map(|(status, n)| (status.as_str().to_owned(), *n)).collect(),
        free_by_vehicle_type: availability
            .free_by_vehicle_type
            .iter()
            .map(|(kind, n)| (kind.as_str().to_owned(), *n))
            .collect(),
        spaces: availability.spaces.iter().map(|(space, shown)| live_view(space, shown)).collect(),
    }
}

fn envelope_error(error: EnvelopeError) -> ApiError {
    ApiError::bad_request(format!("body: {error}"))
}

async fn take(state: &AppState, auth: &BerthAuth, envelope: Envelope) -> ApiResult<Accepted> {
    let uplink = match envelope {
        Envelope::Uplink(uplink) => uplink,
        Envelope::Ignored(what) => {
            // Still authenticated: an unauthorised caller learns nothing from a 202.
            state.kernel.ingest_scope_check(&auth.0)?;
            return Ok(Accepted::Accepted(Json(IngestView {
                result: "ignored".into(),
                device_id: None,
                space_id: None,
                status: None,
                confidence: None,
                detail: Some(what),
            })));
        }
    };
    let input = uplink.into_input().ok_or_else(|| ApiError::bad_request("body: no device"))?;
    let report = state.kernel.ingest(&auth.0, input).await?;
    Ok(Accepted::Accepted(Json(report.into())))
}

pub struct LiveApi;

/// The SSE stream of a subscription: snapshot or replay first, then the deltas. A client that
/// falls behind the feed is disconnected (it reconnects with `Last-Event-ID`).
fn live_stream(
    kernel: &Kernel,
    subscription: SiteSubscription,
    area: bool,
) -> EventStream<BoxStream<'static, StreamItem>> {
    let feed = kernel.feed_handle();
    let mut first: Vec<StreamItem> = Vec::new();
    if let Some((seq, snapshot)) = &subscription.snapshot {
        let item = |snapshot: &[Arc<SiteSnapshot>]| {
            let mut views: Vec<AvailabilityView> =
                snapshot.iter().map(|part| availability_view(&part.availability)).collect();
            StreamItem {
                snapshot: if area { None } else { views.pop() },
                sites: area.then_some(views),
                ..stream_item("snapshot", feed.event_id(*seq))
            }
        };
        match snapshot.as_slice() {
            // A site's snapshot is rendered once for every client starting from it.
            [site] if !area => {
                let rendered = site.rendered.get_or_init(|| item(snapshot).json().into()).clone();
                first.push(StreamItem { rendered: Some(rendered), ..stream_item("snapshot", feed.event_id(*seq)) });
            }
            _ => first.push(item(snapshot)),
        }
    }
    // Deltas already in the snapshot or the replay are skipped by sequence number.
    let mut sent = subscription.snapshot.as_ref().map_or(0, |(seq, _)| *seq);
    for event in &subscription.replay {
        first.push(change_item(&feed, event));
        sent = sent.max(event.seq);
    }
    let SiteSubscription { receiver, operator_id, sites, .. } = subscription;
    let (deltas_feed, sites) = (feed.clone(), Arc::new(sites));
    let deltas = futures_util::stream::unfold(receiver, move |mut receiver| {
        let (feed, sites) = (deltas_feed.clone(), sites.clone());
        async move {
            loop {
                match receiver.recv().await {
                    Ok(event)
                        if event.seq > sent && event.operator_id == operator_id && sites.contains(&event.site_id) =>
                    {
                        // Rendered once for every stream on this node.
                        let rendered = event.rendered.get_or_init(|| change_item(&feed, &event).json().into()).clone();
                        let item =
                            StreamItem { rendered: Some(rendered), ..stream_item("space", feed.event_id(event.seq)) };
                        return Some((item, receiver));
                    }
                    Ok(_) => continue,
                    // Fell behind the feed, or the server is stopping: end the stream; the client
                    // reconnects with Last-Event-ID.
                    Err(_) => return None,
                }
            }
        }
    });
    let stream = futures_util::stream::iter(first).chain(deltas).boxed();
    EventStream::new(stream).keep_alive(std::time::Duration::from_secs(15)).to_event(|item| {
        let data = match &item.rendered {
            Some(rendered) => rendered.to_string(),
            None => item.json(),
        };
        poem::web::sse::Event::message(data).id(item.id.clone()).event_type(item.kind.clone())
    })
}

#[OpenApi(tag = "ApiTags::Live")]
impl LiveApi {
    /// The Things Stack v3 uplink webhook (integration key). Point the webhook's "Uplink message"
    /// at this URL; `device` names the device when a field mask drops `end_device_ids`.
    #[oai(path = "/v1/ingest/ttn", method = "post", operation_id = "ingestTtn")]
    async fn ingest_ttn(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        device: Query<Option<String>>,
        body: RawJson,
    ) -> ApiResult<Accepted> {
        let envelope = berth_lorawan::parse_ttn(body.bytes(), device.0.as_deref()).map_err(envelope_error)?;
        take(&state, &auth, envelope).await
    }

    /// ChirpStack v4 (or v3) HTTP integration (integration key). ChirpStack adds `?event=up`;
    /// events other than `up` are acknowledged and ignored.
    #[oai(path = "/v1/ingest/chirpstack", method = "post", operation_id = "ingestChirpstack")]
    async fn ingest_chirpstack(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        event: Query<Option<String>>,
        body: RawJson,
    ) -> ApiResult<Accepted> {
        let envelope = berth_lorawan::parse_chirpstack(body.bytes(), event.0.as_deref()).map_err(envelope_error)?;
        take(&state, &auth, envelope).await
    }

    /// berth's native uplink envelope (integration key):
    /// `{"device", "f_port", "payload_hex" | "payload_base64", "counter"?, "time"?}`.
    #[oai(path = "/v1/ingest/uplinks", method = "post", operation_id = "ingestUplink")]
    async fn ingest_native(&self, state: Data<&AppState>, auth: BerthAuth, body: RawJson) -> ApiResult<Accepted> {
        let envelope = berth_lorawan::parse_native(body.bytes(), None).map_err(envelope_error)?;
        take(&state, &auth, envelope).await
    }

    /// Live availability of a site: counts by status and vehicle type, and every space's shown
    /// state with its confidence and data age.
    #[oai(path = "/v1/sites/:site_id/availability", method = "get", operation_id = "getSiteAvailability")]
    async fn availability(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        site_id: Path<Uuid>,
    ) -> ApiResult<Json<AvailabilityView>> {
        let availability = state.kernel.site_availability(&auth.0, SiteId::from_uuid(site_id.0)).await?;
        Ok(Json(availability_view(&availability)))
    }

    /// Server-Sent Events of a site's availability: first a `snapshot` event, then a `space`
    /// event for every change. Reconnect with `Last-Event-ID` to receive only what was missed
    /// (a fresh snapshot if too much was). A client that cannot keep up is disconnected.
    #[oai(path = "/v1/sites/:site_id/availability/stream", method = "get", operation_id = "streamSiteAvailability")]
    async fn stream(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        site_id: Path<Uuid>,
        #[oai(name = "Last-Event-ID")] last_event_id: Header<Option<String>>,
    ) -> ApiResult<EventStream<BoxStream<'static, StreamItem>>> {
        let subscription =
            state.kernel.subscribe_site(&auth.0, SiteId::from_uuid(site_id.0), last_event_id.0.as_deref()).await?;
        Ok(live_stream(&state.kernel, subscription, false))
    }

    /// Server-Sent Events of every site of the caller's operator inside a bounding box
    /// (`bbox=min_lon,min_lat,max_lon,max_lat`, at most 500 sites): first a `snapshot` event
    /// with each site's availability, then a `space` event (with its `site_id`) for every change.
    /// Resumable with `Last-Event-ID` like the site stream. Sites created later are not included.
    #[oai(path = "/v1/availability/stream", method = "get", operation_id = "streamAreaAvailability")]
    async fn stream_area(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        bbox: Query<String>,
        #[oai(name = "Last-Event-ID")] last_event_id: Header<Option<String>>,
    ) -> ApiResult<EventStream<BoxStream<'static, StreamItem>>> {
        let area = BoundingBox::parse("bbox", &bbox.0).map_err(KernelError::from)?;
        let subscription = state.kernel.subscribe_area(&auth.0, area, last_event_id.0.as_deref()).await?;
        Ok(live_stream(&state.kernel, subscription, true))
    }

    /// Override what a space shows (operator admin): wins over the sensor until `until` or until
    /// cleared. Audit-logged in the space's history.
    #[oai(path = "/v1/spaces/:space_id/override", method = "put", operation_id = "setSpaceOverride")]
    async fn set_override(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        space_id: Path<Uuid>,
        body: Json<OverrideRequest>,
    ) -> ApiResult<Json<LiveSpaceView>> {
        let space_id = SpaceId::from_uuid(space_id.0);
        let input = OverrideInput { status: body.0.status.into(), reason: body.0.reason, until: body.0.until };
        let (_, shown) = state.kernel.set_override(&auth.0, space_id, input).await?;
        let space = state.kernel.get_space(&auth.0, space_id).await?;
        Ok(Json(live_view(&space, &shown)))
    }

    /// Clear a space's override (operator admin).
    #[oai(path = "/v1/spaces/:space_id/override", method = "delete", operation_id = "clearSpaceOverride")]
    async fn clear_override(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        space_id: Path<Uuid>,
    ) -> ApiResult<Deleted> {
        state.kernel.clear_override(&auth.0, SpaceId::from_uuid(space_id.0)).await?;
        Ok(Deleted::NoContent)
    }

    /// A space's history of shown-state changes, newest first.
    #[oai(path = "/v1/spaces/:space_id/history", method = "get", operation_id = "getSpaceHistory")]
    async fn history(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        space_id: Path<Uuid>,
        limit: Query<Option<u32>>,
    ) -> ApiResult<Json<SpaceHistory>> {
        let limit = u64::from(limit.0.unwrap_or(100));
        let events = state.kernel.space_history(&auth.0, SpaceId::from_uuid(space_id.0), limit).await?;
        Ok(Json(SpaceHistory { items: events.into_iter().map(Into::into).collect() }))
    }

    /// What a device's messages say about it: last seen, battery, last decoded object, errors,
    /// and counts of rejected messages by reason.
    #[oai(path = "/v1/devices/:device_id/health", method = "get", operation_id = "getDeviceHealth")]
    async fn device_health(
        &self,
        state: Data<&AppState>,
        auth: BerthAuth,
        device_id: Path<Uuid>,
    ) -> ApiResult<Json<DeviceHealthView>> {
        Ok(Json(state.kernel.device_health(&auth.0, DeviceId::from_uuid(device_id.0)).await?.into()))
    }
}
