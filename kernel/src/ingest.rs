//! Ingest: an uplink (from MQTT or a webhook, already out of its envelope) → the device → its
//! vendor plugin → the space's live state, persisted with its history. Also the operator's
//! override and the availability view.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};

use crate::auth::{Access, Principal};
pub use crate::commit::IngestTurn;
use crate::commit::{KnownDevice, LiveWrite, SpaceWrite};
use crate::error::{KernelError, KernelResult, ValidationError};
use crate::ids::{DeviceId, OperatorId, SiteId, SpaceId};
use crate::live::{
    Applied, DeviceHealth, Effective, LiveConfig, Observation, Override, Reading, Revised, SpaceEvent, SpaceEventKind,
    SpaceLive, next_revision, payload_digest,
};
use crate::plugin::{Occupancy, PluginPortError, SensorReading, SensorUplink};
use crate::service::{Kernel, now, operator_scope};
use crate::space::{Space, SpaceState, SpaceStatus};
use crate::vehicle_type::VehicleType;

/// One uplink, out of its envelope.
#[derive(Debug, Clone)]
pub struct UplinkInput {
    /// The device's external id: a DevEUI or the serial it was registered with.
    pub device_key: String,
    pub f_port: u8,
    pub payload: Vec<u8>,
    pub counter: Option<u32>,
    /// When the network received it; `None` means now.
    pub event_time: Option<DateTime<Utc>>,
}

/// What became of an uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestResult {
    Changed,
    Refreshed,
    Duplicate,
    OutOfOrder,
    /// Decoded, but the device is bound to no space.
    Unbound,
}

impl IngestResult {
    pub fn as_str(self) -> &'static str {
        match self {
            IngestResult::Changed => "changed",
            IngestResult::Refreshed => "refreshed",
            IngestResult::Duplicate => "duplicate",
            IngestResult::OutOfOrder => "out_of_order",
            IngestResult::Unbound => "unbound",
        }
    }
}

#[derive(Debug, Clone)]
pub struct IngestReport {
    pub device_id: DeviceId,
    pub space_id: Option<SpaceId>,
    pub result: IngestResult,
    pub shown: Option<Effective>,
}

/// An override as an operator asks for it.
#[derive(Debug, Clone)]
pub struct OverrideInput {
    pub status: SpaceStatus,
    pub reason: String,
    pub until: Option<DateTime<Utc>>,
}

/// A site's live availability.
#[derive(Debug, Clone)]
pub struct Availability {
    pub site_id: SiteId,
    pub at: DateTime<Utc>,
    pub counts: BTreeMap<SpaceStatus, u64>,
    /// Free spaces per vehicle type.
    pub free_by_vehicle_type: BTreeMap<VehicleType, u64>,
    /// Shared with search's snapshots, which reuse the same spaces for many answers.
    pub spaces: Vec<(std::sync::Arc<Space>, Effective)>,
}

/// An uplink whose device is known, ready to decode.
struct Prepared {
    operator: OperatorId,
    input: UplinkInput,
    key: String,
    known: std::sync::Arc<KnownDevice>,
    received_at: DateTime<Utc>,
    event_time: DateTime<Utc>,
}

impl Prepared {
    fn sensor_uplink(&self) -> SensorUplink {
        SensorUplink {
            device_id: self.known.device.details.external_id.clone(),
            model: self.known.device.details.model.clone(),
            f_port: self.input.f_port,
            payload: self.input.payload.clone(),
            received_at: self.event_time,
        }
    }
}

/// Device clocks run fast; an event this far in the future is taken as now.
pub(crate) const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);
/// Striped locks: readings for one space apply one at a time.
pub(crate) const LIVE_LOCKS: usize = 64;

fn live_stripe(space: SpaceId) -> usize {
    (space.as_uuid().as_u128() % LIVE_LOCKS as u128) as usize
}

/// One decoded uplink's way: what to store, what to publish once stored, what to answer.
struct Step {
    write: Option<LiveWrite>,
    answer: KernelResult<IngestReport>,
    publish: Option<crate::commit::Publish>,
}

/// Uplinks of a batch by result, counted into the metrics once per batch.
#[derive(Default)]
struct Tally {
    results: [u64; 5],
}

impl Tally {
    const RESULTS: [IngestResult; 5] = [
        IngestResult::Changed,
        IngestResult::Refreshed,
        IngestResult::Duplicate,
        IngestResult::OutOfOrder,
        IngestResult::Unbound,
    ];

    fn count(&mut self, result: IngestResult) {
        self.results[result as usize] += 1;
    }

    fn record(&self) {
        for (result, count) in Self::RESULTS.iter().zip(self.results) {
            if count > 0 {
                metrics::counter!("berth_ingest_uplinks_total", "result" => result.as_str()).increment(count);
            }
        }
        let duplicates = self.results[IngestResult::Duplicate as usize];
        if duplicates > 0 {
            metrics::counter!("berth_ingest_rejected_total", "source" => "ingest", "reason" => "duplicate")
                .increment(duplicates);
        }
    }
}

fn ingest_scope(caller: &Principal) -> KernelResult<OperatorId> {
    match caller {
        Principal::Integration { operator_id, .. } => Ok(*operator_id),
        other => operator_scope(other, Access::Write),
    }
}

impl Kernel {
    /// Fails unless the caller may push device data (integration or operator-admin keys).
    pub fn ingest_scope_check(&self, caller: &Principal) -> KernelResult<()> {
        ingest_scope(caller).map(|_| ())
    }

    /// An operator by id or slug, for transports that name the operator (MQTT topics).
    pub async fn operator_by_ref(&self, reference: &str) -> KernelResult<Option<OperatorId>> {
        if let Ok(id) = OperatorId::parse(reference) {
            return Ok(self.store().get_operator(id).await?.map(|operator| operator.id));
        }
        Ok(self.store().find_operator_by_slug(reference).await?.map(|operator| operator.id))
    }

    pub fn live_config(&self) -> LiveConfig {
        LiveConfig::default()
    }

    /// Takes one uplink through the device's plugin into its space's state.
    pub async fn ingest(&self, caller: &Principal, input: UplinkInput) -> KernelResult<IngestReport> {
        let operator = ingest_scope(caller)?;
        self.ingest_for_operator(operator, input).await
    }

    /// Takes one uplink for an operator that the transport itself established: a broker
    /// subscription configured for that operator, or a topic on a broker only trusted publishers
    /// reach. Everything else goes through [`Kernel::ingest`] and its caller's scope.
    pub async fn ingest_for_operator(&self, operator: OperatorId, input: UplinkInput) -> KernelResult<IngestReport> {
        let mut reports = self.ingest_many(vec![(operator, input)]).await;
        reports.pop().unwrap_or_else(|| Err(KernelError::Unavailable("ingest answered nothing".into())))
    }

    /// Takes many uplinks at once (each for an operator the transport established), answering
    /// in the same order. One decode hop, one lock of the spaces involved and one commit for
    /// the lot: readings for the same space apply in order, each from the one before.
    pub async fn ingest_many(&self, batch: Vec<(OperatorId, UplinkInput)>) -> Vec<KernelResult<IngestReport>> {
        self.ingest_many_in_turn(IngestTurn::unordered(), batch).await
    }

    /// A place in line for a batch from an ordered source (a broker subscription): take it as
    /// the batch is cut from the stream, then hand it to [`Kernel::ingest_many_in_turn`], so
    /// batches processed concurrently still apply in the order their uplinks came.
    pub fn ingest_turn(&self) -> IngestTurn {
        self.committer().take_turn()
    }

    /// [`Kernel::ingest_many`] in `turn`: the batch locks its spaces after every batch whose
    /// turn was taken before.
    pub async fn ingest_many_in_turn(
        &self,
        turn: IngestTurn,
        batch: Vec<(OperatorId, UplinkInput)>,
    ) -> Vec<KernelResult<IngestReport>> {
        let (prepared, healths) = self.prepare(batch).await;
        let uplinks = prepared.iter().filter_map(|p| p.as_ref().ok()).map(Prepared::sensor_uplink).collect();
        let mut readings = self.plugins().decode_many(uplinks).await.into_iter();
        let mut answers: Vec<Option<KernelResult<IngestReport>>> = Vec::with_capacity(prepared.len());
        let mut decoded = Vec::with_capacity(prepared.len());
        for (index, prepared) in prepared.into_iter().enumerate() {
            match prepared {
                Ok(prepared) => {
                    let reading = readings
                        .next()
                        .unwrap_or_else(|| Err(PluginPortError::Fault("the plugin host answered nothing".into())));
                    decoded.push((index, prepared, reading));
                    answers.push(None);
                }
                Err(error) => answers.push(Some(Err(error))),
            }
        }
        let steps = self.apply_decoded(turn, decoded, &healths).await;
        for (index, answer) in steps {
            answers[index] = Some(answer);
        }
        answers
            .into_iter()
            .map(|answer| answer.unwrap_or_else(|| Err(KernelError::Unavailable("ingest answered nothing".into()))))
            .collect()
    }

    /// Finds the uplinks' devices (unknown devices are rejected here) and their stored health:
    /// from the caches, the rest in one query per operator.
    async fn prepare(
        &self,
        batch: Vec<(OperatorId, UplinkInput)>,
    ) -> (Vec<KernelResult<Prepared>>, HashMap<DeviceId, DeviceHealth>) {
        let keyed: Vec<(OperatorId, UplinkInput, String)> = batch
            .into_iter()
            .map(|(operator, input)| {
                let key = crate::device::normalise_external_id(&input.device_key);
                (operator, input, key)
            })
            .collect();
        let known = self.known_devices(keyed.iter().map(|(operator, _, key)| (*operator, key.as_str()))).await;
        let mut prepared = Vec::with_capacity(keyed.len());
        for (operator, input, key) in keyed {
            let received_at = now();
            let event_time = input.event_time.map(|time| time.min(received_at + MAX_CLOCK_SKEW)).unwrap_or(received_at);
            prepared.push(match known.get(&operator).and_then(|keys| keys.get(&key)) {
                Some(Ok(Some(known))) => {
                    Ok(Prepared { operator, input, key, known: known.clone(), received_at, event_time })
                }
                Some(Ok(None)) | None => {
                    let error = ValidationError::new(
                        "device",
                        format!("no device with external_id '{key}' is registered for this operator"),
                    );
                    self.rejects().reject("ingest", "unknown_device", &key, &error.message);
                    Err(error.into())
                }
                Some(Err(error)) => Err(error.clone().into()),
            });
        }
        let devices = prepared.iter().filter_map(|p| p.as_ref().ok()).map(|p| (p.operator, p.known.device.id));
        match self.stored_healths(devices).await {
            Ok(healths) => (prepared, healths),
            Err(error) => (prepared.into_iter().map(|p| p.and(Err(error.clone().into()))).collect(), HashMap::new()),
        }
    }

    /// The rest of the uplinks' way, once decoded: the spaces' state and device health under
    /// the spaces' locks, queued for the commit (which publishes the changes), then the answers.
    async fn apply_decoded(
        &self,
        mut turn: IngestTurn,
        decoded: Vec<(usize, Prepared, Result<SensorReading, PluginPortError>)>,
        healths: &HashMap<DeviceId, DeviceHealth>,
    ) -> Vec<(usize, KernelResult<IngestReport>)> {
        // Every space the batch touches, locked in one order (so batches never deadlock) until
        // its writes are queued: the next reading of a space starts from this one's state.
        let stripes: std::collections::BTreeSet<usize> = decoded
            .iter()
            .filter(|(_, prepared, reading)| reading.is_ok() && prepared.known.site.is_some())
            .filter_map(|(_, prepared, _)| prepared.known.device.space_id.map(live_stripe))
            .collect();
        let mut guards = Vec::with_capacity(stripes.len());
        turn.wait().await;
        for stripe in stripes {
            guards.push(self.live_locks()[stripe].lock().await);
        }
        drop(turn);
        let epoch = self.committer().epoch();
        let mut lives = match self.load_lives(&decoded, epoch).await {
            Ok(lives) => lives,
            Err(error) => return decoded.into_iter().map(|(index, ..)| (index, Err(error.clone().into()))).collect(),
        };
        let config = self.live_config();
        let mut tally = Tally::default();
        let mut answers = Vec::with_capacity(decoded.len());
        let mut writes = Vec::with_capacity(decoded.len());
        let mut publish = Vec::new();
        let mut written = std::collections::HashSet::new();
        for (index, prepared, reading) in decoded {
            let stored_health = healths.get(&prepared.known.device.id);
            let step = self.step(prepared, stored_health, reading, &mut lives, &config, &mut tally);
            answers.push((index, step.answer, step.write.is_some()));
            if let Some(space) = step.write.as_ref().and_then(|write| write.space.as_ref()) {
                written.insert(space.space);
            }
            writes.extend(step.write);
            publish.extend(step.publish);
        }
        tally.record();
        for (space, state) in lives {
            if written.contains(&space) {
                self.caches().remember_live(space, state, epoch);
            }
        }
        if writes.is_empty() {
            return answers.into_iter().map(|(index, answer, _)| (index, answer)).collect();
        }
        let devices: Vec<DeviceId> = writes.iter().map(|write| write.device).collect();
        let queued = self.committer().enqueue(self.store(), &self.feed_handle(), writes, Some(epoch), publish);
        drop(guards);
        match crate::commit::answer(queued).await {
            Ok(()) => answers.into_iter().map(|(index, answer, _)| (index, answer)).collect(),
            Err(error) => {
                // The cached health was never stored: read it again next time (the cached
                // states are of an epoch that has ended).
                for device in devices {
                    self.caches().forget_health(device);
                }
                answers
                    .into_iter()
                    .map(|(index, answer, wrote)| (index, if wrote { Err(error.clone().into()) } else { answer }))
                    .collect()
            }
        }
    }

    /// The live state of every space the batch reads, each with the revision its writes get:
    /// this node's cache or the shared states, whichever is newer, else the database (a query
    /// per operator for those in neither, once the writes queued before are committed).
    async fn load_lives(
        &self,
        decoded: &[(usize, Prepared, Result<SensorReading, PluginPortError>)],
        epoch: u64,
    ) -> Result<HashMap<SpaceId, Revised>, crate::StoreError> {
        let mut wanted: Vec<(OperatorId, SpaceId)> = Vec::with_capacity(decoded.len());
        let mut seen = std::collections::HashSet::with_capacity(decoded.len());
        for (_, prepared, _) in decoded {
            if let Some(space) = prepared.known.device.space_id.filter(|space| seen.insert(*space)) {
                wanted.push((prepared.operator, space));
            }
        }
        let mut shared = self.load_shared(wanted.iter().map(|(_, space)| *space)).await.into_iter();
        let mut lives = HashMap::with_capacity(wanted.len());
        let mut missing: HashMap<OperatorId, Vec<SpaceId>> = HashMap::new();
        for (operator, space) in wanted {
            let newest = match (self.caches().live(space, epoch), shared.next().flatten()) {
                (Some(cached), Some(shared)) => Some(if shared.revision > cached.revision { shared } else { cached }),
                (cached, shared) => cached.or(shared),
            };
            match newest {
                Some(state) => {
                    lives.insert(space, state);
                }
                None => missing.entry(operator).or_default().push(space),
            }
        }
        if !missing.is_empty() {
            self.committer().flush(self.store(), &self.feed_handle()).await?;
        }
        for (operator, spaces) in missing {
            let rows = self.store().list_space_live(operator, &spaces).await?;
            lives.extend(rows.into_iter().map(|(space, live)| (space, Revised::unrevised(live))));
        }
        let at = now();
        for state in lives.values_mut() {
            state.revision = state.next(at);
        }
        Ok(lives)
    }

    /// The shared states of `spaces`, in order; empty when nodes share none, or on an error
    /// (the caller reads the database instead).
    async fn load_shared(&self, spaces: impl Iterator<Item = SpaceId>) -> Vec<Option<Revised>> {
        let Some(shared) = self.committer().shared() else { return Vec::new() };
        let spaces: Vec<SpaceId> = spaces.collect();
        match shared.load(&spaces).await {
            Ok(states) if states.len() == spaces.len() => states,
            _ => {
                metrics::counter!("berth_live_share_failures_total", "op" => "load").increment(1);
                Vec::new()
            }
        }
    }

    /// Shares this node's states with the others through `shared` (set once, at start, before
    /// ingest begins; `false` if it was set already).
    pub fn share_live_states(&self, shared: std::sync::Arc<dyn crate::ports::SharedLiveStates>) -> bool {
        self.committer().share_through(shared)
    }

    /// One decoded uplink: its effect on the space (in `lives`) and the device's health, what
    /// to store, what to publish once stored, and what to answer.
    fn step(
        &self,
        prepared: Prepared,
        stored_health: Option<&DeviceHealth>,
        reading: Result<SensorReading, PluginPortError>,
        lives: &mut HashMap<SpaceId, Revised>,
        config: &LiveConfig,
        tally: &mut Tally,
    ) -> Step {
        let Prepared { operator, input, key, known, received_at, event_time } = prepared;
        let (device, site) = (&known.device, known.site);
        let reading = match reading {
            Ok(reading) => reading,
            Err(error) => {
                let reason = match &error {
                    PluginPortError::NoDecoder(_) => "no_decoder",
                    PluginPortError::Rejected(_) => "plugin_rejected",
                    _ => "plugin_fault",
                };
                self.rejects().reject("ingest", reason, &key, &error);
                let health = self.caches().update_health(device.id, stored_health, true, |health| {
                    *health.rejected.entry(reason.to_owned()).or_default() += 1;
                    health.last_error = Some(error.to_string());
                    health.last_error_at = Some(received_at);
                });
                let answer = Err(match error {
                    PluginPortError::NoDecoder(model) => ValidationError::new(
                        "device",
                        format!("no plugin decodes device model '{model}'; install one or fix the device's model"),
                    )
                    .into(),
                    PluginPortError::Rejected(message) => ValidationError::new(
                        "payload",
                        format!("the {} plugin rejected the payload: {message}", device.details.vendor),
                    )
                    .into(),
                    other => KernelError::Unavailable(format!("decoding failed: {other}")),
                });
                let write =
                    health.map(|health| LiveWrite { operator, device: device.id, health: Some(health), space: None });
                return Step { write, answer, publish: None };
            }
        };
        let seen = |health: &mut DeviceHealth| {
            health.last_seen = health.last_seen.max(Some(received_at));
            health.battery_mv = reading.battery_mv.or(health.battery_mv);
            health.temperature_c = reading.temperature_c.or(health.temperature_c);
            health.last_object_json = Some(reading.object_json.clone());
        };
        let (Some(space_id), Some(site_id)) = (device.space_id, site) else {
            let health = self.caches().update_health(device.id, stored_health, false, |health| {
                seen(health);
                health.accepted += 1;
            });
            tally.count(IngestResult::Unbound);
            let write =
                health.map(|health| LiveWrite { operator, device: device.id, health: Some(health), space: None });
            let answer =
                Ok(IngestReport { device_id: device.id, space_id: None, result: IngestResult::Unbound, shown: None });
            return Step { write, answer, publish: None };
        };
        let observation = match reading.occupancy {
            Occupancy::Occupied => Observation::Occupied,
            Occupancy::Free => Observation::Free,
            Occupancy::Unknown => Observation::Unknown,
        };
        let sensed = Reading {
            observation,
            event_time,
            received_at,
            counter: input.counter,
            payload_digest: payload_digest(&input.payload),
        };
        let state = lives
            .entry(space_id)
            .or_insert_with(|| Revised { revision: next_revision(0, received_at), live: SpaceLive::default() });
        let revision = state.revision;
        let live = &mut state.live;
        let before = live.effective(received_at, config);
        let applied = live.apply(&sensed, config);
        let after = live.effective(received_at, config);
        let result = match applied {
            Applied::Changed { .. } => IngestResult::Changed,
            Applied::Refreshed => IngestResult::Refreshed,
            Applied::Duplicate => IngestResult::Duplicate,
            Applied::OutOfOrder => IngestResult::OutOfOrder,
        };
        tally.count(result);
        let health = self.caches().update_health(device.id, stored_health, false, |health| {
            seen(health);
            if result == IngestResult::Duplicate {
                *health.rejected.entry("duplicate".to_owned()).or_default() += 1;
            } else {
                health.accepted += 1;
            }
        });
        let event = match applied {
            Applied::Changed { from, to } => Some(SpaceEvent {
                id: uuid::Uuid::now_v7(),
                operator_id: operator,
                space_id,
                device_id: Some(device.id),
                kind: SpaceEventKind::Sensed,
                from,
                to,
                at: event_time,
                recorded_at: received_at,
                detail: None,
            }),
            _ => None,
        };
        let shown = if before.status != after.status || event.is_some() {
            column_state(&after, live.sensed_since.unwrap_or(received_at))
        } else {
            None
        };
        let space = (result != IngestResult::Duplicate).then(|| SpaceWrite {
            space: space_id,
            live: live.clone(),
            revision,
            event,
            shown,
        });
        let write =
            (health.is_some() || space.is_some()).then_some(LiveWrite { operator, device: device.id, health, space });
        let publish = (before.status != after.status || before.flapping != after.flapping)
            .then(|| (operator, site_id, space_id, after.clone()));
        let answer = Ok(IngestReport { device_id: device.id, space_id: Some(space_id), result, shown: Some(after) });
        Step { write, answer, publish }
    }

    /// A change another node made (heard through the fan-out): this node's cached state of the
    /// space is out of date, and its listeners want the change.
    pub fn take_remote_change(
        &self,
        operator: OperatorId,
        site: SiteId,
        space: SpaceId,
        shown: Effective,
        at: DateTime<Utc>,
    ) {
        self.caches().forget_live(space);
        self.feed().publish_remote(operator, site, space, shown, at);
    }

    /// The devices these external ids name, with their spaces' sites: from the cache, the rest
    /// in one query per operator (cached for a few seconds, ids naming nothing too). A failed
    /// query fails the keys it was for.
    async fn known_devices<'k>(
        &self,
        keys: impl Iterator<Item = (OperatorId, &'k str)>,
    ) -> HashMap<OperatorId, HashMap<String, Result<Option<std::sync::Arc<KnownDevice>>, crate::StoreError>>> {
        let mut known: HashMap<OperatorId, HashMap<String, _>> = HashMap::new();
        let mut missing: HashMap<OperatorId, Vec<String>> = HashMap::new();
        for (operator, key) in keys {
            let found = known.entry(operator).or_default();
            if found.contains_key(key) {
                continue;
            }
            let cached = self.caches().device(operator, key);
            if cached.is_none() {
                missing.entry(operator).or_default().push(key.to_owned());
            }
            found.insert(key.to_owned(), Ok(cached.flatten()));
        }
        for (operator, keys) in missing {
            let answers = known.entry(operator).or_default();
            match self.store().find_devices_by_external_ids(operator, &keys).await {
                Ok(found) => {
                    let mut found: HashMap<String, std::sync::Arc<KnownDevice>> = found
                        .into_iter()
                        .map(|(device, site)| {
                            (device.details.external_id.clone(), std::sync::Arc::new(KnownDevice { device, site }))
                        })
                        .collect();
                    for key in keys {
                        let device = found.remove(&key);
                        self.caches().remember_device(operator, &key, device.clone());
                        answers.insert(key, Ok(device));
                    }
                }
                Err(error) => {
                    for key in keys {
                        answers.insert(key, Err(error.clone()));
                    }
                }
            }
        }
        known
    }

    /// Each device's health as last stored (the cache holds anything newer): from the cache,
    /// the rest in one query per operator; never stored is the default.
    async fn stored_healths(
        &self,
        devices: impl Iterator<Item = (OperatorId, DeviceId)>,
    ) -> Result<HashMap<DeviceId, DeviceHealth>, crate::StoreError> {
        let mut healths = HashMap::new();
        let mut missing: HashMap<OperatorId, Vec<DeviceId>> = HashMap::new();
        for (operator, device) in devices {
            if healths.contains_key(&device) {
                continue;
            }
            match self.caches().health(device) {
                Some(health) => {
                    healths.insert(device, health);
                }
                None => {
                    healths.insert(device, DeviceHealth::default());
                    missing.entry(operator).or_default().push(device);
                }
            }
        }
        for (operator, devices) in missing {
            healths.extend(self.store().list_device_health(operator, &devices).await?);
        }
        Ok(healths)
    }

    /// Waits until the ingest writes queued so far are committed (so the database holds the
    /// newest state of the locked space) and returns the commit epoch. Call it under the
    /// space's lock.
    async fn settled_epoch(&self) -> KernelResult<u64> {
        self.committer().flush(self.store(), &self.feed_handle()).await?;
        Ok(self.committer().epoch())
    }

    pub(crate) fn live_lock(&self, space: SpaceId) -> &tokio::sync::Mutex<()> {
        &self.live_locks()[live_stripe(space)]
    }

    /// Sets an override: the space shows `status` until `until` (or until cleared).
    pub async fn set_override(
        &self,
        caller: &Principal,
        space_id: SpaceId,
        input: OverrideInput,
    ) -> KernelResult<(SpaceLive, Effective)> {
        let operator = operator_scope(caller, Access::Write)?;
        let reason = crate::validate::required_text("reason", &input.reason, 500)?;
        let at = now();
        if input.until.is_some_and(|until| until <= at) {
            return Err(ValidationError::new("until", "must be in the future").into());
        }
        let set_by = caller_label(caller);
        let space = self.store().get_space(operator, space_id).await?.ok_or_else(|| KernelError::not_found("space"))?;
        let config = self.live_config();
        let _guard = self.live_lock(space_id).lock().await;
        let epoch = self.settled_epoch().await?;
        let mut live = self.store().get_space_live(operator, space_id).await?.unwrap_or_default();
        let before = live.effective(at, &config);
        live.override_ = Some(Override {
            status: input.status,
            reason: reason.clone(),
            until: input.until,
            set_at: at,
            set_by: set_by.clone(),
        });
        let after = live.effective(at, &config);
        let detail = format!("{reason} (by {set_by})");
        let event = override_event(operator, space_id, SpaceEventKind::OverrideSet, &before, &after, at, detail);
        self.save_override(&space, &live, &event, &after, epoch).await?;
        Ok((live, after))
    }

    pub async fn clear_override(&self, caller: &Principal, space_id: SpaceId) -> KernelResult<()> {
        let operator = operator_scope(caller, Access::Write)?;
        let space = self.store().get_space(operator, space_id).await?.ok_or_else(|| KernelError::not_found("space"))?;
        let at = now();
        let config = self.live_config();
        let _guard = self.live_lock(space_id).lock().await;
        let epoch = self.settled_epoch().await?;
        let mut live = self.store().get_space_live(operator, space_id).await?.unwrap_or_default();
        if live.override_.is_none() {
            return Ok(());
        }
        let before = live.effective(at, &config);
        live.override_ = None;
        let after = live.effective(at, &config);
        let detail = format!("cleared by {}", caller_label(caller));
        let event = override_event(operator, space_id, SpaceEventKind::OverrideCleared, &before, &after, at, detail);
        self.save_override(&space, &live, &event, &after, epoch).await
    }

    /// Stores an override's change of a space (under the space's lock, the ingest queue
    /// flushed) and then caches, shares and publishes it as ingest does.
    async fn save_override(
        &self,
        space: &Space,
        live: &SpaceLive,
        event: &SpaceEvent,
        after: &Effective,
        epoch: u64,
    ) -> KernelResult<()> {
        let cached = self.caches().live(space.id, epoch).map_or(0, |state| state.revision);
        let shared =
            self.load_shared(std::iter::once(space.id)).await.pop().flatten().map_or(0, |state| state.revision);
        self.caches().forget_live(space.id);
        let shown = column_state(after, event.at);
        self.store().save_space_live(space.operator_id, space.id, live, Some(event), shown).await?;
        let state = Revised { revision: next_revision(cached.max(shared), now()), live: live.clone() };
        self.caches().remember_live(space.id, state.clone(), epoch);
        // Through the writer: shared (when nodes share states) before the change is published.
        let publish = (space.operator_id, space.site_id, space.id, after.clone());
        let done = self.committer().stored(self.store(), &self.feed_handle(), space.id, state, publish);
        crate::commit::answer(done).await?;
        Ok(())
    }

    pub async fn space_history(
        &self,
        caller: &Principal,
        space_id: SpaceId,
        limit: u64,
    ) -> KernelResult<Vec<SpaceEvent>> {
        let operator = operator_scope(caller, Access::Read)?;
        self.store().get_space(operator, space_id).await?.ok_or_else(|| KernelError::not_found("space"))?;
        Ok(self.store().list_space_events(operator, space_id, limit.clamp(1, 1000)).await?)
    }

    pub async fn device_health(&self, caller: &Principal, device_id: DeviceId) -> KernelResult<DeviceHealth> {
        let operator = operator_scope(caller, Access::Read)?;
        self.store().get_device(operator, device_id).await?.ok_or_else(|| KernelError::not_found("device"))?;
        let mut healths = self.stored_healths(std::iter::once((operator, device_id))).await?;
        Ok(healths.remove(&device_id).unwrap_or_default())
    }

    /// Counts by status and vehicle type, and every space's shown state.
    pub async fn site_availability(&self, caller: &Principal, site_id: SiteId) -> KernelResult<Availability> {
        let operator = operator_scope(caller, Access::Read)?;
        self.check_site(operator, site_id).await?;
        self.site_availability_for(operator, site_id).await
    }

    /// [`Kernel::site_availability`] of a site already known to belong to `operator`.
    pub(crate) async fn site_availability_for(
        &self,
        operator: OperatorId,
        site_id: SiteId,
    ) -> KernelResult<Availability> {
        let at = now();
        let config = self.live_config();
        let rows = self.store().list_site_live(operator, site_id).await?;
        let spaces = rows.into_iter().map(|(space, live)| {
            let shown = shown(&space, &live, at, &config);
            (std::sync::Arc::new(space), shown)
        });
        Ok(Availability::of(site_id, at, spaces))
    }
}

impl Availability {
    /// Counts by status and vehicle type of spaces and what they show at `at`.
    pub(crate) fn of(
        site_id: SiteId,
        at: DateTime<Utc>,
        shown: impl Iterator<Item = (std::sync::Arc<Space>, Effective)>,
    ) -> Self {
        let mut counts: BTreeMap<SpaceStatus, u64> = SpaceStatus::ALL.into_iter().map(|status| (status, 0)).collect();
        let mut free_by_vehicle_type = BTreeMap::new();
        let mut spaces = Vec::with_capacity(shown.size_hint().0);
        for (space, shown) in shown {
            *counts.entry(shown.status).or_default() += 1;
            if shown.status == SpaceStatus::Free {
                *free_by_vehicle_type.entry(space.details.vehicle_type).or_default() += 1;
            }
            spaces.push((space, shown));
        }
        Self { site_id, at, counts, free_by_vehicle_type, spaces }
    }
}

/// What a space shows: its live state, except that a space the operator closed by hand stays
/// closed whatever the sensor says (an override still wins).
pub(crate) fn shown(space: &Space, live: &SpaceLive, at: DateTime<Utc>, config: &LiveConfig) -> Effective {
    let mut shown = live.effective(at, config);
    if space.state.status == SpaceStatus::Closed && !shown.overridden {
        shown.status = SpaceStatus::Closed;
    }
    shown
}

impl Kernel {
    /// Fills in what each space shows now, for spaces whose sensor was ever heard.
    pub(crate) async fn with_live(&self, operator: OperatorId, mut spaces: Vec<Space>) -> KernelResult<Vec<Space>> {
        let ids: Vec<SpaceId> = spaces.iter().map(|space| space.id).collect();
        let rows: std::collections::HashMap<SpaceId, SpaceLive> =
            self.store().list_space_live(operator, &ids).await?.into_iter().collect();
        let (at, config) = (now(), self.live_config());
        for space in &mut spaces {
            if let Some(live) = rows.get(&space.id) {
                space.live = Some(shown(space, live, at, &config));
            }
        }
        Ok(spaces)
    }
}

/// What the space's own status columns get. `closed` there means closed by hand (a space
/// update), which live state never writes: an override to `closed` shows through the live views.
fn column_state(shown: &Effective, since: DateTime<Utc>) -> Option<SpaceState> {
    (shown.status != SpaceStatus::Closed).then_some(SpaceState {
        status: shown.status,
        status_since: since,
        confidence: shown.confidence,
    })
}

/// A site's availability as new subscribers start from it: one per site and feed position,
/// shared by every client that connects meanwhile, with room for its one rendering (the API's
/// JSON), so a crowd connecting at once costs one query and one rendering.
#[derive(Debug)]
pub struct SiteSnapshot {
    pub availability: Availability,
    pub rendered: std::sync::OnceLock<std::sync::Arc<str>>,
}

/// A subscription to the live state of one or more sites: where to start, then the feed.
pub struct SiteSubscription {
    /// Events to send first: a resumed client's missed events, in order.
    pub replay: Vec<std::sync::Arc<crate::feed::LiveEvent>>,
    /// A full snapshot (sequence number and each site's availability), when the client is new or
    /// asked for events the buffer no longer has.
    pub snapshot: Option<(u64, Vec<std::sync::Arc<SiteSnapshot>>)>,
    pub receiver: tokio::sync::broadcast::Receiver<std::sync::Arc<crate::feed::LiveEvent>>,
    pub operator_id: OperatorId,
    /// The sites whose events belong to this subscription.
    pub sites: std::collections::HashSet<SiteId>,
}

impl SiteSubscription {
    /// Whether a feed event belongs to this subscription.
    pub fn wants(&self, event: &crate::feed::LiveEvent) -> bool {
        event.operator_id == self.operator_id && self.sites.contains(&event.site_id)
    }
}

/// Sites an area subscription may cover at most.
pub const MAX_AREA_SITES: usize = 500;

impl Kernel {
    /// Subscribes to a site's changes. With `last_event_id` from a previous stream, replays what
    /// was missed if the buffer still has it; otherwise starts with a snapshot.
    pub async fn subscribe_site(
        &self,
        caller: &Principal,
        site_id: SiteId,
        last_event_id: Option<&str>,
    ) -> KernelResult<SiteSubscription> {
        let operator_id = operator_scope(caller, Access::Read)?;
        self.check_site(operator_id, site_id).await?;
        self.subscribe(operator_id, vec![site_id], last_event_id).await
    }

    /// Subscribes to every site of the caller's operator inside a bounding box (sites created
    /// later are not included; subscribe again).
    pub async fn subscribe_area(
        &self,
        caller: &Principal,
        area: crate::geo::BoundingBox,
        last_event_id: Option<&str>,
    ) -> KernelResult<SiteSubscription> {
        let operator_id = operator_scope(caller, Access::Read)?;
        let mut sites = Vec::new();
        let mut page = crate::page::PageRequest::first(crate::page::MAX_PAGE_SIZE);
        loop {
            let found = self.store().list_sites(operator_id, &Default::default(), page).await?;
            sites.extend(found.items.iter().filter(|site| area.contains(&site.details.location)).map(|site| site.id));
            if sites.len() > MAX_AREA_SITES {
                return Err(ValidationError::new(
                    "bbox",
                    format!("more than {MAX_AREA_SITES} sites in this box; narrow it"),
                )
                .into());
            }
            match found.next_after {
                Some(after) => page = crate::page::PageRequest { after: Some(after), limit: page.limit },
                None => break,
            }
        }
        self.subscribe(operator_id, sites, last_event_id).await
    }

    async fn subscribe(
        &self,
        operator_id: OperatorId,
        sites: Vec<SiteId>,
        last_event_id: Option<&str>,
    ) -> KernelResult<SiteSubscription> {
        // Subscribe before reading, so nothing falls between the snapshot and the stream.
        let receiver = self.feed().subscribe();
        let replay = last_event_id.and_then(|id| self.feed().parse_event_id(id)).and_then(|seq| self.feed().since(seq));
        let mut subscription = SiteSubscription {
            replay: Vec::new(),
            snapshot: None,
            receiver,
            operator_id,
            sites: sites.iter().copied().collect(),
        };
        match replay {
            Some(events) => subscription.replay = events.into_iter().filter(|e| subscription.wants(e)).collect(),
            None => {
                let seq = self.feed().last_seq();
                let mut snapshot = Vec::with_capacity(sites.len());
                for site in sites {
                    // The caller's access to each site was checked when the sites were chosen.
                    snapshot.push(self.site_snapshot(operator_id, site, seq).await?);
                }
                subscription.snapshot = Some((seq, snapshot));
            }
        }
        Ok(subscription)
    }

    /// The site's availability for a subscriber that subscribed at feed position `seq`: a
    /// recent snapshot taken at `seq` or later (the subscriber receives every later change and
    /// skips those the snapshot holds), else a fresh one. One query per site at a time: a crowd
    /// connecting meanwhile waits for it and takes its result.
    async fn site_snapshot(
        &self,
        operator_id: OperatorId,
        site: SiteId,
        seq: u64,
    ) -> KernelResult<std::sync::Arc<SiteSnapshot>> {
        let find = || async {
            // The feed position as the rows are read: later than `seq` is fine.
            let at_seq = self.feed().last_seq();
            let availability = self.site_availability_for(operator_id, site).await?;
            Ok::<_, KernelError>(Some((
                at_seq,
                std::sync::Arc::new(SiteSnapshot { availability, rendered: Default::default() }),
            )))
        };
        let found = self.caches().snapshots.get_or_find_if(&site, |(at_seq, _)| *at_seq >= seq, find).await?;
        found.map(|(_, snapshot)| snapshot).ok_or_else(|| KernelError::not_found("site"))
    }
}

/// The audit entry of an override set or cleared.
fn override_event(
    operator_id: OperatorId,
    space_id: SpaceId,
    kind: SpaceEventKind,
    before: &Effective,
    after: &Effective,
    at: DateTime<Utc>,
    detail: String,
) -> SpaceEvent {
    SpaceEvent {
        id: uuid::Uuid::now_v7(),
        operator_id,
        space_id,
        device_id: None,
        kind,
        from: before.status,
        to: after.status,
        at,
        recorded_at: at,
        detail: Some(detail),
    }
}

fn caller_label(caller: &Principal) -> String {
    match caller {
        Principal::Operator { key_id, .. } => format!("key {key_id}"),
        Principal::Integration { key_id, .. } => format!("key {key_id}"),
        Principal::PlatformAdmin { key_id: Some(key_id) } => format!("key {key_id}"),
        Principal::PlatformAdmin { key_id: None } => "platform".into(),
        Principal::Driver { driver_id } => format!("driver {driver_id}"),
    }
}
