//! The ingest client: subscribes (QoS 1, persistent session, manual acknowledgements), hands
//! each uplink to the kernel, acknowledges it once stored, and reconnects with backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_kernel::Kernel;
use berth_kernel::error::KernelError;
use berth_kernel::ids::OperatorId;
use berth_kernel::ingest::{IngestResult, IngestTurn, UplinkInput};
use berth_lorawan::{Envelope, Topic};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{Mutex, Semaphore, watch};

use crate::MqttError;
use crate::broker::LocalLink;
use crate::filter::{filter_matches, validate_filter};

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
}

impl BrokerAddress {
    /// Reads `mqtt://host[:port]` or `tcp://host[:port]` (port 1883 by default).
    pub fn parse(url: &str) -> Result<Self, MqttError> {
        let invalid = |message: String| MqttError::Config { setting: "mqtt.url", message };
        let rest = url
            .strip_prefix("mqtt://")
            .or_else(|| url.strip_prefix("tcp://"))
            .ok_or_else(|| invalid(format!("'{url}' must start with mqtt:// or tcp:// (TLS is not built in)")))?;
        let rest = rest.trim_end_matches('/');
        if rest.contains('@') {
            return Err(invalid("put credentials in mqtt.username and mqtt.password, not in the URL".into()));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                (host, port.parse::<u16>().map_err(|_| invalid(format!("'{port}' is not a port")))?)
            }
            _ => (rest, 1883),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid(format!("'{url}' names no host")));
        }
        Ok(Self { host: host.to_owned(), port })
    }
}

/// One topic filter and whose data arrives on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub filter: String,
    /// The operator (id or slug) all data on this filter belongs to. `None`: the topic names it
    /// (`berth/v1/{operator}/uplink/{device}`), which only a broker restricted to trusted
    /// publishers should allow.
    pub operator: Option<String>,
}

impl Subscription {
    /// The berth native topics of every operator.
    pub fn native() -> Self {
        Self { filter: "berth/v1/+/uplink/+".into(), operator: None }
    }
}

#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub broker: BrokerAddress,
    /// Stable across restarts: the broker keeps the session (and unacknowledged messages) by it.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub subscriptions: Vec<Subscription>,
    pub keep_alive: Duration,
    /// Messages being processed at once; the client stops reading the socket beyond this.
    pub max_in_flight: usize,
    /// Connections to the broker. With more than one, berth subscribes through a shared
    /// subscription (`$share/{client_id}/{filter}`) and the broker spreads the messages over
    /// them: brokers bound the unacknowledged messages per connection (rumqttd to 100, Mosquitto
    /// to 20 by default), and an ack comes only after the commit, so one connection caps the rate.
    pub connections: usize,
    /// QoS 1 with each message acknowledged after its commit (the default), or QoS 0 for a
    /// broker in this same process: its queue lives and dies with berth, so acknowledgements
    /// would add nothing but a window (rumqttd's is 100 messages) on the rate. Back-pressure
    /// then comes from TCP: berth stops reading beyond `max_in_flight`.
    pub at_least_once: bool,
    /// Reconnect backoff bounds.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl IngestSettings {
    pub fn new(broker: BrokerAddress, client_id: impl Into<String>) -> Self {
        Self {
            broker,
            client_id: client_id.into(),
            username: None,
            password: None,
            subscriptions: vec![Subscription::native()],
            keep_alive: Duration::from_secs(30),
            max_in_flight: 256,
            connections: 1,
            at_least_once: true,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
        }
    }

    fn validate(&self) -> Result<(), MqttError> {
        if self.client_id.is_empty() || self.client_id.len() > 128 {
            return Err(MqttError::Config { setting: "mqtt.client_id", message: "must be 1 to 128 characters".into() });
        }
        if !(1..=64).contains(&self.connections) {
            return Err(MqttError::Config { setting: "mqtt.connections", message: "must be 1 to 64".into() });
        }
        if self.subscriptions.is_empty() {
            return Err(MqttError::Config { setting: "mqtt.subscriptions", message: "subscribe to something".into() });
        }
        for subscription in &self.subscriptions {
            validate_filter(&subscription.filter)
                .map_err(|message| MqttError::Config { setting: "mqtt.subscriptions", message })?;
        }
        Ok(())
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied(IngestResult),
    /// Not an uplink (a join, a status event): acknowledged and dropped.
    Ignored,
    /// Bad data, counted by reason; acknowledged (sending it again would not help).
    Rejected(&'static str),
    /// The kernel could not store it and the client is stopping: left unacknowledged, so the
    /// broker sends it again.
    Failed(String),
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub received: AtomicU64,
    pub applied: AtomicU64,
    pub ignored: AtomicU64,
    pub rejected: AtomicU64,
    pub failed: AtomicU64,
    pub connects: AtomicU64,
    /// Every connection is up.
    pub connected: AtomicBool,
    /// The broker confirmed the subscriptions on every connection.
    pub subscribed: AtomicBool,
    connections: usize,
    up: AtomicUsize,
    confirmed: AtomicUsize,
}

impl IngestStats {
    fn new(connections: usize) -> Self {
        Self { connections, ..Self::default() }
    }

    fn count(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Applied(_) => &self.applied,
            Outcome::Ignored => &self.ignored,
            Outcome::Rejected(_) => &self.rejected,
            Outcome::Failed(_) => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// One connection came up (`true`) or went down.
    fn set_up(&self, was: &mut bool, up: bool) {
        tally(&self.up, &self.connected, self.connections, was, up);
    }

    /// One connection's subscriptions were confirmed (`true`) or lost with it.
    fn set_confirmed(&self, was: &mut bool, confirmed: bool) {
        tally(&self.confirmed, &self.subscribed, self.connections, was, confirmed);
    }
}

/// Counts one connection's flag in `count`; `all` says whether every connection has it.
fn tally(count: &AtomicUsize, all: &AtomicBool, connections: usize, was: &mut bool, now: bool) {
    if std::mem::replace(was, now) != now {
        let counted =
            if now { count.fetch_add(1, Ordering::Relaxed) + 1 } else { count.fetch_sub(1, Ordering::Relaxed) - 1 };
        all.store(counted == connections, Ordering::Relaxed);
    }
}

/// A running ingest client.
pub struct MqttIngest {
    stats: Arc<IngestStats>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MqttIngest {
    /// Starts the client; it connects (and reconnects) in the background.
    pub fn spawn(kernel: Kernel, settings: IngestSettings) -> Result<Self, MqttError> {
        settings.validate()?;
        let stats = Arc::new(IngestStats::new(settings.connections));
        let (stop, stopped) = watch::channel(false);
        let handler =
            Arc::new(Handler { kernel, subscriptions: settings.subscriptions.clone(), operators: Mutex::default() });
        let shared = settings.connections > 1;
        // One group per client id: another berth deployment on the same broker gets every
        // message too.
        let group: String =
            settings.client_id.chars().map(|c| if matches!(c, '/' | '+' | '#') { '_' } else { c }).collect();
        let tasks = (0..settings.connections)
            .map(|index| {
                let mut connection = settings.clone();
                if shared {
                    connection.client_id = format!("{}-{index}", settings.client_id);
                    connection.max_in_flight = settings.max_in_flight.div_ceil(settings.connections);
                    for subscription in &mut connection.subscriptions {
                        // A filter shared already (between nodes) is shared by the connections too.
                        if !subscription.filter.starts_with("$share/") {
                            subscription.filter = format!("$share/{group}/{}", subscription.filter);
                        }
                    }
                }
                tokio::spawn(run(connection, handler.clone(), stats.clone(), stopped.clone()))
            })
            .collect();
        Ok(Self { stats, stop, tasks })
    }

    /// Starts the client on the embedded broker's in-process link (see [`run_local`]).
    pub fn spawn_local(
        kernel: Kernel,
        link: LocalLink,
        subscriptions: Vec<Subscription>,
        max_in_flight: usize,
    ) -> Result<Self, MqttError> {
        let mut check = IngestSettings::new(BrokerAddress { host: "local".into(), port: 0 }, "local");
        check.subscriptions = subscriptions.clone();
        check.validate()?;
        let stats = Arc::new(IngestStats::new(1));
        let (stop, stopped) = watch::channel(false);
        let filters = subscriptions.iter().map(|subscription| subscription.filter.clone()).collect();
        let handler = Arc::new(Handler { kernel, subscriptions, operators: Mutex::default() });
        let task = tokio::spawn(run_local(link, filters, max_in_flight.max(1), handler, stats.clone(), stopped));
        Ok(Self { stats, stop, tasks: vec![task] })
    }

    pub fn stats(&self) -> &Arc<IngestStats> {
        &self.stats
    }

    /// Waits until the broker confirmed the subscriptions (so nothing published from now on is
    /// missed); `false` after `timeout`.
    pub async fn wait_subscribed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.stats.subscribed.load(Ordering::Relaxed) {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Disconnects after the messages in flight are done.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn run(
    settings: IngestSettings,
    handler: Arc<Handler>,
    stats: Arc<IngestStats>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut options = MqttOptions::new(&settings.client_id, &settings.broker.host, settings.broker.port);
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(settings.keep_alive)
        // Larger than any broker default we meet, so an oversized message is rejected by
        // reason here instead of breaking the connection (and coming back forever).
        .set_max_packet_size(16 * 1024 * 1024, 64 * 1024)
        .set_inflight(u16::try_from(settings.max_in_flight).unwrap_or(u16::MAX).max(1));
    if let Some(username) = &settings.username {
        options.set_credentials(username, settings.password.clone().unwrap_or_default());
    }
    let (client, mut eventloop) = AsyncClient::new(options, settings.max_in_flight.max(16));
    let permits = Arc::new(Semaphore::new(settings.max_in_flight.max(1)));
    // Messages are taken in batches (whatever has arrived while the previous batch started),
    // processed concurrently, and acknowledged in the order they came: MQTT 3.1.1 (4.6) wants
    // PUBACKs in PUBLISH order, and brokers enforce it.
    let (pending, incoming) = tokio::sync::mpsc::unbounded_channel::<Incoming>();
    let (batches, in_order) = tokio::sync::mpsc::unbounded_channel::<Batch<Incoming>>();
    let batcher = tokio::spawn(make_batches(incoming, batches, handler.clone(), stopped.clone()));
    // Which connection (1, 2, ...) is current; 0 while down.
    let current = Arc::new(AtomicU64::new(0));
    let acker = tokio::spawn(acknowledge_in_order(in_order, client.clone(), stats.clone(), current.clone()));
    let qos = if settings.at_least_once { QoS::AtLeastOnce } else { QoS::AtMostOnce };
    let mut connection = 0u64;
    let (mut up, mut confirmed) = (false, false);
    let mut backoff = settings.backoff_min;
    loop {
        let event = tokio::select! {
            _ = stopped.changed() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                connection += 1;
                // Acks only make sense on the connection their messages came on: after a
                // reconnect the broker sends the unacknowledged ones again.
                current.store(connection, Ordering::Relaxed);
                backoff = settings.backoff_min;
                stats.connects.fetch_add(1, Ordering::Relaxed);
                stats.set_up(&mut up, true);
                tracing::info!(session_present = ack.session_present, client_id = %settings.client_id, "MQTT connected");
                // Subscribing again on a resumed session is harmless and covers a broker that
                // lost it.
                let filters =
                    settings.subscriptions.iter().map(|s| rumqttc::SubscribeFilter::new(s.filter.clone(), qos));
                if let Err(error) = client.try_subscribe_many(filters) {
                    tracing::warn!(%error, "MQTT subscribe could not be queued");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => stats.set_confirmed(&mut confirmed, true),
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                stats.received.fetch_add(1, Ordering::Relaxed);
                // Back-pressure: beyond max_in_flight the loop stops reading the socket.
                let permit = tokio::select! {
                    _ = stopped.changed() => break,
                    permit = permits.clone().acquire_owned() => permit.expect("invariant: the semaphore is never closed"),
                };
                let _ = pending.send(Incoming { publish: Arc::new(publish), connection, _permit: permit });
            }
            Ok(_) => {}
            Err(error) => {
                stats.set_up(&mut up, false);
                stats.set_confirmed(&mut confirmed, false);
                current.store(0, Ordering::Relaxed);
                tracing::warn!(
                    %error,
                    broker = %format!("{}:{}", settings.broker.host, settings.broker.port),
                    retry_in_ms = backoff.as_millis() as u64,
                    "MQTT connection lost"
                );
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tokio::time::sleep(jitter(backoff)) => {}
                }
                backoff = (backoff * 2).min(settings.backoff_max);
            }
        }
    }
    // Let the messages in flight finish and be acknowledged before disconnecting.
    drop(pending);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = batcher.await;
        let _ = acker.await;
    })
    .await;
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(event) = eventloop.poll().await {
            if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
    stats.set_up(&mut up, false);
    stats.set_confirmed(&mut confirmed, false);
}

/// The client on the embedded broker's in-process link: the same handling as over TCP, without
/// each message being encoded, sent through the loopback and decoded again. Messages come at
/// QoS 0, as they would over TCP from a broker in this process (see
/// `IngestSettings::at_least_once`). Back-pressure is the router's own: it stops forwarding
/// after a buffer's worth until the link asks for more, which it does only while fewer than
/// `max_in_flight` messages are being processed.
async fn run_local(
    link: LocalLink,
    filters: Vec<String>,
    max_in_flight: usize,
    handler: Arc<Handler>,
    stats: Arc<IngestStats>,
    mut stopped: watch::Receiver<bool>,
) {
    use futures_util::FutureExt;
    use rumqttd::Notification;

    let LocalLink { mut tx, mut rx } = link;
    let (mut up, mut confirmed) = (false, false);
    stats.connects.fetch_add(1, Ordering::Relaxed);
    stats.set_up(&mut up, true);
    let mut awaiting = filters.len();
    for filter in filters {
        if let Err(error) = tx.subscribe(filter.clone()) {
            tracing::error!(%error, %filter, "the embedded broker refused a subscription");
        }
    }
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let (chunks, received) = tokio::sync::mpsc::unbounded_channel::<Chunk>();
    let (batches, done) = tokio::sync::mpsc::unbounded_channel::<Batch<Chunk>>();
    let batcher = tokio::spawn(make_batches(received, batches, handler, stopped.clone()));
    let counter = tokio::spawn(count_outcomes(done, stats.clone()));
    loop {
        let first = tokio::select! {
            _ = stopped.changed() => break,
            next = rx.next() => next,
        };
        let mut notifications = match first {
            Ok(Some(notification)) => vec![notification],
            Ok(None) => continue,
            Err(error) => {
                tracing::error!(%error, "the embedded broker's link closed");
                break;
            }
        };
        // Whatever else has arrived, without waiting.
        while let Some(Ok(Some(notification))) = rx.next().now_or_never() {
            notifications.push(notification);
        }
        let mut messages = Vec::with_capacity(notifications.len());
        let mut unscheduled = false;
        for notification in notifications {
            match notification {
                Notification::Forward(forward) => messages.push(forward.publish),
                Notification::Unschedule => unscheduled = true,
                Notification::DeviceAck(_) => {
                    awaiting = awaiting.saturating_sub(1);
                    if awaiting == 0 {
                        stats.set_confirmed(&mut confirmed, true);
                    }
                }
                _ => {}
            }
        }
        if !messages.is_empty() {
            stats.received.fetch_add(messages.len() as u64, Ordering::Relaxed);
            let wanted = u32::try_from(messages.len().min(max_in_flight)).unwrap_or(u32::MAX);
            let permit = tokio::select! {
                _ = stopped.changed() => break,
                permit = permits.clone().acquire_many_owned(wanted) => permit.expect("invariant: the semaphore is never closed"),
            };
            if chunks.send(Chunk { messages, _permit: permit }).is_err() {
                break;
            }
        }
        // Only now, with room for more, the router may send the next buffer's worth.
        if unscheduled && let Err(error) = rx.wake().await {
            tracing::error!(%error, "the embedded broker's link closed");
            break;
        }
    }
    // Let the messages in flight finish.
    drop(chunks);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = batcher.await;
        let _ = counter.await;
    })
    .await;
    stats.set_up(&mut up, false);
    stats.set_confirmed(&mut confirmed, false);
}

/// Messages as the in-process link delivered them, holding their share of `max_in_flight`.
struct Chunk {
    messages: Vec<rumqttd::protocol::Publish>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Received for Chunk {
    type Message = rumqttd::protocol::Publish;

    fn messages(&self) -> &[Self::Message] {
        &self.messages
    }
}

/// Counts what became of each batch (the in-process link acknowledges nothing); a batch's
/// messages leave `max_in_flight` as it is counted, as acknowledged ones do over TCP.
async fn count_outcomes(mut done: tokio::sync::mpsc::UnboundedReceiver<Batch<Chunk>>, stats: Arc<IngestStats>) {
    while let Some(batch) = done.recv().await {
        let Ok(outcomes) = batch.work.await else {
            let count: usize = batch.received.iter().map(|chunk| chunk.messages.len()).sum();
            tracing::error!(messages = count, "an ingest batch panicked; its messages were not applied");
            stats.failed.fetch_add(count as u64, Ordering::Relaxed);
            continue;
        };
        for outcome in outcomes {
            stats.count(&outcome);
        }
    }
}

/// A message received and not yet acknowledged.
struct Incoming {
    publish: Arc<Publish>,
    connection: u64,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Received for Incoming {
    type Message = Arc<Publish>;

    fn messages(&self) -> &[Self::Message] {
        std::slice::from_ref(&self.publish)
    }
}

/// What a client receives at a time: one message over TCP, a buffer's worth over the
/// in-process link; held until its batch is done with it.
trait Received: Send + 'static {
    type Message: Message + Clone;
    fn messages(&self) -> &[Self::Message];
}

/// Messages processed together, in arrival order.
struct Batch<T> {
    received: Vec<T>,
    work: tokio::task::JoinHandle<Vec<Outcome>>,
}

/// Messages per batch at most.
const MAX_BATCH: usize = 4096;
/// Batches processed at once.
const BATCHES_IN_FLIGHT: usize = 8;

/// Cuts batches from what arrives, a few at a time: while they run, the next one fills up with
/// whatever arrived meanwhile (up to [`MAX_BATCH`] messages). Each takes its turn as it is cut,
/// so batches apply in arrival order.
async fn make_batches<T: Received>(
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<T>,
    batches: tokio::sync::mpsc::UnboundedSender<Batch<T>>,
    handler: Arc<Handler>,
    stopped: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    while let Some(first) = incoming.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let mut count = first.messages().len();
        let mut received = vec![first];
        while count < MAX_BATCH {
            match incoming.try_recv() {
                Ok(next) => {
                    count += next.messages().len();
                    received.push(next);
                }
                Err(_) => break,
            }
        }
        let publishes: Vec<T::Message> = received.iter().flat_map(|item| item.messages().iter().cloned()).collect();
        let (handler, stopped) = (handler.clone(), stopped.clone());
        let turn = handler.kernel.ingest_turn();
        let work = tokio::spawn(async move {
            let outcomes = handler.handle_batch(turn, &publishes, stopped).await;
            drop(slot);
            outcomes
        });
        if batches.send(Batch { received, work }).is_err() {
            return;
        }
    }
}

async fn acknowledge_in_order(
    mut in_order: tokio::sync::mpsc::UnboundedReceiver<Batch<Incoming>>,
    client: AsyncClient,
    stats: Arc<IngestStats>,
    current: Arc<AtomicU64>,
) {
    while let Some(batch) = in_order.recv().await {
        let outcomes = batch.work.await.unwrap_or_else(|error| {
            batch.received.iter().map(|_| Outcome::Failed(format!("handler panicked: {error}"))).collect()
        });
        for (message, outcome) in batch.received.iter().zip(outcomes) {
            stats.count(&outcome);
            // Unacknowledged (stopping, or from an earlier connection), the broker sends it again.
            if !matches!(outcome, Outcome::Failed(_))
                && message.connection == current.load(Ordering::Relaxed)
                && let Err(error) = client.ack(&message.publish).await
            {
                tracing::debug!(%error, "MQTT ack not sent (disconnecting?)");
            }
        }
    }
}

/// Spreads reconnects of many nodes: 75% to 125% of the delay.
fn jitter(delay: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    delay.mul_f64(0.75 + f64::from(nanos % 1000) / 2000.0)
}

/// A received message as the handler reads it, whichever way it came.
trait Message: Send + Sync + 'static {
    fn topic(&self) -> &str;
    fn payload(&self) -> &[u8];
}

impl Message for Arc<Publish> {
    fn topic(&self) -> &str {
        &self.topic
    }

    fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// The router checked that the topic is UTF-8 when the message was published.
impl Message for rumqttd::protocol::Publish {
    fn topic(&self) -> &str {
        std::str::from_utf8(&self.topic).unwrap_or_default()
    }

    fn payload(&self) -> &[u8] {
        &self.payload
    }
}

struct Handler {
    kernel: Kernel,
    subscriptions: Vec<Subscription>,
    /// Operator references (id or slug) already resolved, with when.
    operators: Mutex<HashMap<String, (Option<OperatorId>, Instant)>>,
}

/// How long a resolved operator reference is trusted.
const OPERATOR_CACHE_TTL: Duration = Duration::from_secs(60);
/// The longest wait between attempts to store a message.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

impl Handler {
    /// Handles messages together (one decode hop, mostly one commit), answering in order;
    /// those whose storage failed are retried one by one until stored.
    async fn handle_batch<M: Message>(
        &self,
        turn: IngestTurn,
        publishes: &[M],
        stopped: watch::Receiver<bool>,
    ) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(publishes.len());
        let mut inputs = Vec::new();
        let mut taken = Vec::new();
        for (index, publish) in publishes.iter().enumerate() {
            match self.parse(publish.topic(), publish.payload()).await {
                Ok(input) => {
                    inputs.push(input);
                    taken.push(index);
                    outcomes.push(None);
                }
                Err(outcome) => outcomes.push(Some(outcome)),
            }
        }
        for (index, result) in taken.into_iter().zip(self.kernel.ingest_many_in_turn(turn, inputs).await) {
            outcomes[index] = Some(outcome_of(result));
        }
        let mut answered = Vec::with_capacity(publishes.len());
        for (publish, outcome) in publishes.iter().zip(outcomes) {
            answered.push(match outcome {
                Some(Outcome::Failed(_)) | None => self.handle_until_stored(publish, stopped.clone()).await,
                Some(outcome) => outcome,
            });
        }
        answered
    }

    /// Handles a message; when storage fails, tries again (backing off, up to 5 s apart) until
    /// it works or the client stops. Meanwhile the message stays unacknowledged, and the
    /// in-flight bound stops reading more.
    async fn handle_until_stored(&self, publish: &impl Message, mut stopped: watch::Receiver<bool>) -> Outcome {
        let mut delay = Duration::from_millis(50);
        let mut attempts = 0u32;
        loop {
            let outcome = self.handle(publish.topic(), publish.payload()).await;
            let Outcome::Failed(error) = &outcome else { return outcome };
            attempts += 1;
            if attempts == 1 || attempts.is_multiple_of(20) {
                tracing::error!(topic = %publish.topic(), %error, attempts, "uplink not stored yet; retrying");
            }
            tokio::select! {
                _ = stopped.changed() => return outcome,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }

    async fn handle(&self, topic: &str, payload: &[u8]) -> Outcome {
        match self.parse(topic, payload).await {
            Ok((operator, input)) => outcome_of(self.kernel.ingest_for_operator(operator, input).await),
            Err(outcome) => outcome,
        }
    }

    /// Reads a message: whose uplink it is, or what became of it if it is not one to ingest.
    async fn parse(&self, topic: &str, payload: &[u8]) -> Result<(OperatorId, UplinkInput), Outcome> {
        let rejects = self.kernel.rejects();
        let known = berth_lorawan::parse_topic(topic);
        let device_hint = device_of(topic, known);
        let envelope = match berth_lorawan::parse_mqtt_on(topic, known, payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                rejects.reject("mqtt", error.reason(), device_hint, &error);
                return Err(Outcome::Rejected(error.reason()));
            }
        };
        let uplink = match envelope {
            Envelope::Uplink(uplink) => uplink,
            Envelope::Ignored(_) => return Err(Outcome::Ignored),
        };
        let configured =
            self.subscriptions.iter().find(|s| filter_matches(&s.filter, topic)).and_then(|s| s.operator.as_deref());
        let named = match known {
            Some(Topic::Native { operator, .. }) => Some(operator),
            _ => None,
        };
        let reference = match (configured, named) {
            (Some(configured), Some(named)) if configured != named => {
                rejects.reject(
                    "mqtt",
                    "operator_mismatch",
                    device_hint,
                    &format!("topic names operator '{named}' under a subscription for '{configured}'"),
                );
                return Err(Outcome::Rejected("operator_mismatch"));
            }
            (Some(configured), _) => configured,
            (None, Some(named)) => named,
            (None, None) => {
                rejects.reject(
                    "mqtt",
                    "no_operator",
                    device_hint,
                    &format!("topic '{topic}' is under no subscription with an operator"),
                );
                return Err(Outcome::Rejected("no_operator"));
            }
        };
        let operator = match self.operator(reference).await {
            Ok(Some(operator)) => operator,
            Ok(None) => {
                rejects.reject("mqtt", "unknown_operator", device_hint, &format!("no operator '{reference}'"));
                return Err(Outcome::Rejected("unknown_operator"));
            }
            Err(error) => return Err(Outcome::Failed(error.to_string())),
        };
        let Some(input) = uplink.into_input() else {
            rejects.reject("mqtt", "no_device", device_hint, &"the envelope names no device");
            return Err(Outcome::Rejected("no_device"));
        };
        Ok((operator, input))
    }

    async fn operator(&self, reference: &str) -> Result<Option<OperatorId>, KernelError> {
        let now = Instant::now();
        if let Some((operator, at)) = self.operators.lock().await.get(reference)
            && now.duration_since(*at) < OPERATOR_CACHE_TTL
        {
            return Ok(*operator);
        }
        let operator = self.kernel.operator_by_ref(reference).await?;
        let mut cache = self.operators.lock().await;
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(reference.to_owned(), (operator, now));
        Ok(operator)
    }
}

/// What became of an uplink the kernel took.
fn outcome_of(result: Result<berth_kernel::ingest::IngestReport, KernelError>) -> Outcome {
    match result {
        Ok(report) => Outcome::Applied(report.result),
        // Counted and logged by the kernel.
        Err(KernelError::Validation(error)) => {
            Outcome::Rejected(if error.field == "device" { "unknown_device" } else { "plugin_rejected" })
        }
        Err(KernelError::NotFound { .. } | KernelError::Forbidden(_) | KernelError::Conflict(_)) => {
            Outcome::Rejected("refused")
        }
        Err(error) => Outcome::Failed(error.to_string()),
    }
}

/// The device segment of a known topic, for rate-limiting log lines; else the whole topic.
fn device_of<'a>(topic: &'a str, known: Option<Topic<'a>>) -> &'a str {
    known.map_or(topic, |known| known.device())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            BrokerAddress::parse("mqtt://127.0.0.1:1883").unwrap(),
            BrokerAddress { host: "127.0.0.1".into(), port: 1883 }
        );
        assert_eq!(
            BrokerAddress::parse("tcp://broker.example/").unwrap(),
            BrokerAddress { host: "broker.example".into(), port: 1883 }
        );
        assert_eq!(
            BrokerAddress::parse("mqtt://[::1]:1884").unwrap(),
            BrokerAddress { host: "::1".into(), port: 1884 }
        );
        assert!(BrokerAddress::parse("mqtts://broker.example").unwrap_err().to_string().contains("mqtt.url"));
        assert!(BrokerAddress::parse("mqtt://user:pass@broker").is_err());
        assert!(BrokerAddress::parse("mqtt://host:port").is_err());
    }

    #[test]
    fn device_segments() {
        for (topic, device) in [
            ("v3/app@ttn/devices/eui-1/up", "eui-1"),
            ("application/7/device/0004a30b/event/up", "0004a30b"),
            ("berth/v1/acme/uplink/D1", "D1"),
            ("elsewhere", "elsewhere"),
        ] {
            assert_eq!(device_of(topic, berth_lorawan::parse_topic(topic)), device);
        }
    }
}
