//! Group commit for ingest: every uplink's writes (live row, history event, space columns,
//! device health) go to one writer task, which stores whatever has queued up in one transaction
//! and then answers every uplink in it. Under load one commit (one fsync) carries hundreds of
//! uplinks; alone, an uplink commits at once. An uplink is acknowledged only after its commit.
//!
//! Also here: the caches the ingest path reads instead of the database: which device an external
//! id names (and its space's site), device health, and each space's newest live state as this
//! node computed it (committed, or queued to be; see [`Committer`] for failed commits). Another
//! node's change to a space (heard through the fan-out) drops the space's entry, so the next
//! reading starts from the shared states (when nodes share them) or the database again. With
//! shared states, every commit shares its spaces' states before publishing their changes, and a
//! shared state newer than this node's cached one wins.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::StoreError;
use crate::device::Device;
use crate::ids::{DeviceId, OperatorId, SiteId, SpaceId};
use crate::live::{DeviceHealth, Revised, SpaceEvent, SpaceLive};
use crate::ports::{SharedLiveStates, Store, StoreResult};
use crate::space::SpaceState;

/// What one uplink writes.
#[derive(Debug, Clone)]
pub struct LiveWrite {
    pub operator: OperatorId,
    pub device: DeviceId,
    /// The device's health, when it is due to be stored (see [`HEALTH_EVERY`]).
    pub health: Option<DeviceHealth>,
    pub space: Option<SpaceWrite>,
}

/// What one uplink writes for its space.
#[derive(Debug, Clone)]
pub struct SpaceWrite {
    pub space: SpaceId,
    pub live: SpaceLive,
    /// The state's revision (see [`Revised`]).
    pub revision: u64,
    pub event: Option<SpaceEvent>,
    /// The space's status columns, when what it shows changed.
    pub shown: Option<SpaceState>,
}

/// Uplinks in one transaction at most.
const MAX_BATCH: usize = 16384;

/// A change to publish once its commit is done: operator, site, space, what it shows.
pub(crate) type Publish = (OperatorId, SiteId, SpaceId, crate::live::Effective);

struct Pending {
    writes: Vec<LiveWrite>,
    /// The commit epoch the writes were computed in; `None`: unconditional (a flush).
    epoch: Option<u64>,
    publish: Vec<Publish>,
    /// States already stored (an override's), to share like the writes' before publishing.
    stored: Vec<(SpaceId, Revised)>,
    answer: oneshot::Sender<StoreResult<()>>,
}

/// The writer task's inbox, started on first use (it needs a runtime).
///
/// Commits are pipelined: a batch computes its writes under its spaces' locks, queues them here
/// and releases the locks, so the next batch computes while this one commits (from the states
/// this one left in the cache). Queued writes commit in queue order, several batches to a
/// transaction, and their changes are published in that order once committed. When a commit
/// fails, the epoch moves on: writes computed in the old epoch (possibly from the failed
/// writes' states) are refused without being written, and cached states of the old epoch are
/// no longer trusted, so everything after a failure starts again from the database.
#[derive(Default)]
pub(crate) struct Committer {
    inbox: OnceLock<mpsc::UnboundedSender<Pending>>,
    epoch: Arc<AtomicU64>,
    queued: Arc<AtomicUsize>,
    shared: Arc<OnceLock<Arc<dyn SharedLiveStates>>>,
    /// The last turn handed out (see [`Committer::take_turn`]).
    last_turn: std::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

/// A batch's place in line to lock its spaces: batches lock them in the order they took their
/// turns, so readings that arrived in order apply in order even when the batches before them
/// were still being decoded. Dropping the turn (once the locks are held) lets the next go.
#[derive(Debug)]
pub struct IngestTurn {
    previous: Option<oneshot::Receiver<()>>,
    _done: Option<oneshot::Sender<()>>,
}

impl IngestTurn {
    /// Out of line: for uplinks that came in no order (concurrent webhook requests).
    pub fn unordered() -> Self {
        Self { previous: None, _done: None }
    }

    /// Waits until every earlier turn is done (or was dropped).
    pub(crate) async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            let _ = previous.await;
        }
    }
}

impl Committer {
    /// The next turn in line (see [`IngestTurn`]).
    pub(crate) fn take_turn(&self) -> IngestTurn {
        let (done, next) = oneshot::channel();
        let previous = self.last_turn.lock().expect("invariant: the turn lock is never poisoned").replace(next);
        IngestTurn { previous, _done: Some(done) }
    }

    /// The states shared with other nodes, once set.
    pub(crate) fn shared(&self) -> Option<&Arc<dyn SharedLiveStates>> {
        self.shared.get()
    }

    /// Shares committed states through `shared` from now on (set once, before ingest starts).
    pub(crate) fn share_through(&self, shared: Arc<dyn SharedLiveStates>) -> bool {
        self.shared.set(shared).is_ok()
    }

    /// The current epoch: read it (under the spaces' locks) before reading cached states.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Writes queued and not yet answered.
    fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Queues `writes` (computed in `epoch`), to be published as `publish` once committed.
    /// Call it under the locks the writes were computed under, so the queue order is theirs;
    /// await the answer after releasing them.
    pub(crate) fn enqueue(
        &self,
        store: &Arc<dyn Store>,
        feed: &Arc<crate::feed::LiveFeed>,
        writes: Vec<LiveWrite>,
        epoch: Option<u64>,
        publish: Vec<Publish>,
    ) -> oneshot::Receiver<StoreResult<()>> {
        self.send(store, feed, |answer| Pending { writes, epoch, publish, stored: Vec::new(), answer })
    }

    /// Shares a state stored outside the queue (an override's) and then publishes its change,
    /// in queue order with the ingest writes.
    pub(crate) fn stored(
        &self,
        store: &Arc<dyn Store>,
        feed: &Arc<crate::feed::LiveFeed>,
        space: SpaceId,
        state: Revised,
        publish: Publish,
    ) -> oneshot::Receiver<StoreResult<()>> {
        self.send(store, feed, |answer| Pending {
            writes: Vec::new(),
            epoch: None,
            publish: vec![publish],
            stored: vec![(space, state)],
            answer,
        })
    }

    /// Queues the work `pending` makes around its answer's sender.
    fn send(
        &self,
        store: &Arc<dyn Store>,
        feed: &Arc<crate::feed::LiveFeed>,
        pending: impl FnOnce(oneshot::Sender<StoreResult<()>>) -> Pending,
    ) -> oneshot::Receiver<StoreResult<()>> {
        let inbox = self.inbox.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            let writer = Writer {
                store: store.clone(),
                feed: feed.clone(),
                epoch: self.epoch.clone(),
                queued: self.queued.clone(),
                shared: self.shared.clone(),
            };
            tokio::spawn(writer.run(receiver));
            sender
        });
        let (answer, answered) = oneshot::channel();
        self.queued.fetch_add(1, Ordering::AcqRel);
        if let Err(refused) = inbox.send(pending(answer)) {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            let _ = refused.0.answer.send(Err(writer_stopped()));
        }
        answered
    }

    /// Waits until everything queued so far is committed (or refused); at once when nothing is.
    pub(crate) async fn flush(&self, store: &Arc<dyn Store>, feed: &Arc<crate::feed::LiveFeed>) -> StoreResult<()> {
        if self.queued() == 0 {
            return Ok(());
        }
        answer(self.enqueue(store, feed, Vec::new(), None, Vec::new())).await
    }
}

/// The writer's answer to a queued commit.
pub(crate) async fn answer(answered: oneshot::Receiver<StoreResult<()>>) -> StoreResult<()> {
    answered.await.map_err(|_| writer_stopped())?
}

fn writer_stopped() -> StoreError {
    StoreError::Backend("the ingest writer stopped".into())
}

struct Writer {
    store: Arc<dyn Store>,
    feed: Arc<crate::feed::LiveFeed>,
    epoch: Arc<AtomicU64>,
    queued: Arc<AtomicUsize>,
    shared: Arc<OnceLock<Arc<dyn SharedLiveStates>>>,
}

impl Writer {
    async fn run(self, mut inbox: mpsc::UnboundedReceiver<Pending>) {
        let mut taken: Vec<Pending> = Vec::new();
        let mut writes: Vec<LiveWrite> = Vec::new();
        let mut unshared: HashMap<SpaceId, Revised> = HashMap::new();
        // When the store asked to be called again (`after_commit`), unless a commit comes first.
        let mut deferred: Option<tokio::time::Instant> = None;
        loop {
            let first = match deferred {
                None => inbox.recv().await,
                Some(at) => tokio::select! {
                    biased;
                    first = inbox.recv() => first,
                    () = tokio::time::sleep_until(at) => {
                        deferred = self.after_commit().await;
                        continue;
                    }
                },
            };
            let Some(first) = first else { break };
            taken.push(first);
            let mut size = taken[0].writes.len();
            while size < MAX_BATCH {
                match inbox.try_recv() {
                    Ok(next) => {
                        size += next.writes.len();
                        taken.push(next);
                    }
                    Err(_) => break,
                }
            }
            let epoch = self.epoch.load(Ordering::Acquire);
            let (mut current, stale): (Vec<Pending>, Vec<Pending>) =
                taken.drain(..).partition(|pending| pending.epoch.is_none_or(|at| at == epoch));
            for pending in stale {
                self.answer(pending, Err(StoreError::Backend("an earlier ingest write failed; try again".into())));
            }
            let mut stored = Vec::new();
            for pending in &mut current {
                writes.append(&mut pending.writes);
                stored.extend(pending.stored.iter().cloned());
            }
            let result = if writes.is_empty() { Ok(()) } else { self.store.save_live_batch(&writes).await };
            metrics::histogram!("berth_ingest_commit_batch_size").record(writes.len() as f64);
            if result.is_err() {
                self.epoch.fetch_add(1, Ordering::AcqRel);
                writes.clear();
            }
            // Shared before the changes are published, so a node hearing of a change finds the
            // state that made it. States stored outside the queue were stored whatever happened
            // to this transaction.
            self.share(&writes, stored, &mut unshared).await;
            writes.clear();
            for pending in current {
                let result = if pending.stored.is_empty() { result.clone() } else { Ok(()) };
                if result.is_ok() {
                    for (operator, site, space, shown) in &pending.publish {
                        self.feed.publish(*operator, *site, *space, shown.clone());
                    }
                }
                self.answer(pending, result);
            }
            // The store's deferred work comes after the answers, so no uplink waits for it;
            // while other commits wait, only what is overdue.
            deferred = self.after_commit().await;
        }
    }

    /// Runs the store's deferred work while it asks to go on at once; returns when it asked to
    /// be called again, if it did.
    async fn after_commit(&self) -> Option<tokio::time::Instant> {
        loop {
            match self.store.after_commit(self.queued.load(Ordering::Acquire) > 0).await {
                Some(wait) if wait.is_zero() => continue,
                Some(wait) => return Some(tokio::time::Instant::now() + wait),
                None => return None,
            }
        }
    }

    /// Shares the newest committed state of each space written (when nodes share states),
    /// with those a failed attempt left over: until shared, the others may read an older state.
    async fn share(
        &self,
        writes: &[LiveWrite],
        stored: Vec<(SpaceId, Revised)>,
        unshared: &mut HashMap<SpaceId, Revised>,
    ) {
        let Some(shared) = self.shared.get() else { return };
        // The higher revision is the newer state; of a space's writes in one batch (one
        // revision) the last, so they are read newest first and each space's state is cloned once.
        let newer = |unshared: &HashMap<SpaceId, Revised>, space: &SpaceId, revision: u64| {
            unshared.get(space).is_none_or(|known| known.revision < revision)
        };
        for write in writes.iter().rev().filter_map(|write| write.space.as_ref()) {
            if newer(unshared, &write.space, write.revision) {
                unshared.insert(write.space, Revised { revision: write.revision, live: write.live.clone() });
            }
        }
        for (space, state) in stored {
            if newer(unshared, &space, state.revision) {
                unshared.insert(space, state);
            }
        }
        let states: Vec<(SpaceId, Revised)> = unshared.drain().collect();
        if !share_or_count(shared.as_ref(), &states).await {
            if states.len() > MAX_CACHED {
                tracing::warn!(spaces = states.len(), "too many live states left unshared; dropping them");
                return;
            }
            unshared.extend(states);
        }
    }

    fn answer(&self, pending: Pending, result: StoreResult<()>) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        let _ = pending.answer.send(result);
    }
}

/// Shares committed states, answering whether that worked; a failure is counted (the adapter
/// logs it).
pub(crate) async fn share_or_count(shared: &dyn SharedLiveStates, states: &[(SpaceId, Revised)]) -> bool {
    if states.is_empty() {
        return true;
    }
    let shared = shared.share(states).await.is_ok();
    if !shared {
        metrics::counter!("berth_live_share_failures_total", "op" => "share").increment(1);
    }
    shared
}

/// Device health (last seen, battery, counters) is stored at most this often per device, and at
/// once on an error; the live state and history of every uplink are stored before its ack.
pub const HEALTH_EVERY: Duration = Duration::from_secs(5);

/// How long a cached device lookup is trusted: changes made through another node show up
/// within this time (this node's own changes clear the cache at once).
const DEVICE_TTL: Duration = Duration::from_secs(10);
const MAX_CACHED: usize = 200_000;

/// Bounds a cache: when it is full and `key` would be a new entry, it starts again empty.
fn make_room<K: Eq + std::hash::Hash, V>(cache: &mut HashMap<K, V>, key: &K) {
    if cache.len() >= MAX_CACHED && !cache.contains_key(key) {
        cache.clear();
    }
}

/// A device as ingest needs it: the device and its space's site.
#[derive(Debug, Clone)]
pub(crate) struct KnownDevice {
    pub device: Device,
    pub site: Option<SiteId>,
}

/// Device lookups by operator and external id: what was found (or that nothing was), and when.
type DeviceLookups = HashMap<OperatorId, HashMap<String, (Option<Arc<KnownDevice>>, Instant)>>;

pub(crate) struct IngestCaches {
    devices: Mutex<DeviceLookups>,
    /// Each device's health, and when it was last handed to the writer.
    health: Mutex<HashMap<DeviceId, (DeviceHealth, Option<Instant>)>>,
    /// Each space's newest state, with the commit epoch it was computed in.
    live: Mutex<HashMap<SpaceId, (Revised, u64)>>,
    /// Site snapshots for new subscribers, with the feed position each was taken at: reused
    /// while no change happened and for at most [`SNAPSHOT_TTL`], one query per site at a time,
    /// so a crowd of clients connecting at once costs one query (past the pool's size, one
    /// each would queue and time out).
    pub(crate) snapshots: crate::memo::Memo<SiteId, (u64, Arc<crate::ingest::SiteSnapshot>)>,
}

impl Default for IngestCaches {
    fn default() -> Self {
        Self {
            devices: Mutex::default(),
            health: Mutex::default(),
            live: Mutex::default(),
            snapshots: crate::memo::Memo::new(SNAPSHOT_TTL),
        }
    }
}

/// How long a site snapshot may be reused (its ages and confidences are as of its `at`).
pub(crate) const SNAPSHOT_TTL: Duration = Duration::from_secs(1);

impl IngestCaches {
    pub(crate) fn device(&self, operator: OperatorId, key: &str) -> Option<Option<Arc<KnownDevice>>> {
        let devices = self.devices.lock().expect("invariant: cache lock is never poisoned");
        devices
            .get(&operator)
            .and_then(|keys| keys.get(key))
            .filter(|(_, at)| at.elapsed() < DEVICE_TTL)
            .map(|(known, _)| known.clone())
    }

    pub(crate) fn remember_device(&self, operator: OperatorId, key: &str, known: Option<Arc<KnownDevice>>) {
        let mut devices = self.devices.lock().expect("invariant: cache lock is never poisoned");
        if devices.values().map(HashMap::len).sum::<usize>() >= MAX_CACHED {
            devices.clear();
        }
        devices.entry(operator).or_default().insert(key.to_owned(), (known, Instant::now()));
    }

    /// Devices or spaces changed: look them up again.
    pub(crate) fn forget_devices(&self) {
        self.devices.lock().expect("invariant: cache lock is never poisoned").clear();
    }

    pub(crate) fn health(&self, device: DeviceId) -> Option<DeviceHealth> {
        self.health
            .lock()
            .expect("invariant: cache lock is never poisoned")
            .get(&device)
            .map(|(health, _)| health.clone())
    }

    /// Changes a device's health atomically (starting from `stored` if it is not cached yet)
    /// and returns it when it is due to be stored: `urgent` (an error), or not stored for
    /// [`HEALTH_EVERY`].
    pub(crate) fn update_health(
        &self,
        device: DeviceId,
        stored: Option<&DeviceHealth>,
        urgent: bool,
        change: impl FnOnce(&mut DeviceHealth),
    ) -> Option<DeviceHealth> {
        let mut cache = self.health.lock().expect("invariant: cache lock is never poisoned");
        make_room(&mut cache, &device);
        let (health, written) = cache.entry(device).or_insert_with(|| (stored.cloned().unwrap_or_default(), None));
        change(health);
        let due = urgent || written.is_none_or(|at| at.elapsed() >= HEALTH_EVERY);
        due.then(|| {
            *written = Some(Instant::now());
            health.clone()
        })
    }

    /// A space's newest state, if it was computed in `epoch` (see [`Committer`]).
    pub(crate) fn live(&self, space: SpaceId, epoch: u64) -> Option<Revised> {
        let cache = self.live.lock().expect("invariant: cache lock is never poisoned");
        cache.get(&space).filter(|(_, at)| *at == epoch).map(|(live, _)| live.clone())
    }

    /// A space's newest state, computed in `epoch` (committed, or queued to be).
    pub(crate) fn remember_live(&self, space: SpaceId, live: Revised, epoch: u64) {
        let mut cache = self.live.lock().expect("invariant: cache lock is never poisoned");
        make_room(&mut cache, &space);
        cache.insert(space, (live, epoch));
    }

    pub(crate) fn forget_live(&self, space: SpaceId) {
        self.live.lock().expect("invariant: cache lock is never poisoned").remove(&space);
    }

    pub(crate) fn forget_health(&self, device: DeviceId) {
        self.health.lock().expect("invariant: cache lock is never poisoned").remove(&device);
    }
}
