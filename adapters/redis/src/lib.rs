//! Scale-out through Redis: every change of what a space shows is published on one channel, and
//! every node feeds what the others published into its own live feed, so an SSE client of any
//! node sees uplinks that arrived at any other. The channel only carries the notifications; the
//! record is the shared database.
//!
//! The nodes also share their live cache ([`RedisLiveStates`]): each space's newest committed
//! state with its revision, so a node that takes an uplink for a space another node changed
//! since (a heartbeat, a retried delivery) applies it to that node's state: duplicates and
//! out-of-order readings are caught across nodes without reading the database.
//!
//! Redis pub/sub is fire-and-forget: a node that is disconnected from Redis misses the changes
//! of that moment. Its SSE clients lose nothing they cannot recover: they reconnect (or resume)
//! and get a snapshot from the database.

mod states;

pub use states::RedisLiveStates;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_kernel::Kernel;
use berth_kernel::feed::LiveEvent;
use berth_kernel::ids::{OperatorId, SiteId, SpaceId};
use berth_kernel::live::Effective;
use berth_kernel::space::SpaceStatus;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

/// The channel all nodes share (one per deployment: `redis.channel`).
pub const DEFAULT_CHANNEL: &str = "berth:live";

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("redis.url: {0}")]
    Url(String),
    #[error("cannot reach Redis at redis.url: {0}")]
    Connect(String),
}

/// One change on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WireEvent {
    /// The publishing node, so it can skip its own messages.
    node: String,
    operator_id: uuid::Uuid,
    site_id: uuid::Uuid,
    space_id: uuid::Uuid,
    status: String,
    confidence: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    data_age_secs: Option<i64>,
    stale: bool,
    flapping: bool,
    overridden: bool,
    at: DateTime<Utc>,
}

impl WireEvent {
    fn from_event(node: &str, event: &LiveEvent) -> Self {
        Self {
            node: node.to_owned(),
            operator_id: event.operator_id.as_uuid(),
            site_id: event.site_id.as_uuid(),
            space_id: event.space_id.as_uuid(),
            status: event.shown.status.as_str().to_owned(),
            confidence: event.shown.confidence,
            data_age_secs: event.shown.data_age_secs,
            stale: event.shown.stale,
            flapping: event.shown.flapping,
            overridden: event.shown.overridden,
            at: event.at,
        }
    }

    fn shown(&self) -> Option<Effective> {
        Some(Effective {
            status: SpaceStatus::parse(&self.status)?,
            confidence: self.confidence.clamp(0.0, 1.0),
            data_age_secs: self.data_age_secs,
            stale: self.stale,
            flapping: self.flapping,
            overridden: self.overridden,
        })
    }
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct FanoutStats {
    pub published: AtomicU64,
    pub received: AtomicU64,
    /// Local changes not sent because this node fell behind its own feed.
    pub dropped: AtomicU64,
    pub malformed: AtomicU64,
}

/// The running fan-out: one task publishing this node's changes, one feeding in the others'.
pub struct RedisFanout {
    node: String,
    stats: Arc<FanoutStats>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RedisFanout {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl RedisFanout {
    /// Connects (failing clearly if Redis cannot be reached now) and starts both directions;
    /// afterwards connection losses are retried in the background.
    pub async fn start(url: &str, channel: &str, kernel: Kernel) -> Result<Self, FanoutError> {
        let client = redis::Client::open(url).map_err(|e| FanoutError::Url(e.to_string()))?;
        let publisher = client.get_connection_manager().await.map_err(|e| FanoutError::Connect(e.to_string()))?;
        let node = format!("{:016x}", rand::random::<u64>());
        let stats = Arc::new(FanoutStats::default());
        // Subscribed before returning: changes published by others from now on arrive.
        let mut pubsub = client.get_async_pubsub().await.map_err(|e| FanoutError::Connect(e.to_string()))?;
        pubsub.subscribe(channel).await.map_err(|e| FanoutError::Connect(e.to_string()))?;
        let outbound =
            tokio::spawn(publish_local(kernel.clone(), publisher, channel.to_owned(), node.clone(), stats.clone()));
        let inbound =
            tokio::spawn(receive_remote(client, pubsub, kernel, channel.to_owned(), node.clone(), stats.clone()));
        tracing::info!(node = %node, channel, "live fan-out through Redis started");
        Ok(Self { node, stats, tasks: vec![outbound, inbound] })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn stats(&self) -> &Arc<FanoutStats> {
        &self.stats
    }
}

async fn publish_local(
    kernel: Kernel,
    mut connection: redis::aio::ConnectionManager,
    channel: String,
    node: String,
    stats: Arc<FanoutStats>,
) {
    let feed = kernel.feed_handle();
    let mut receiver = feed.subscribe();
    loop {
        let event = match receiver.recv().await {
            Ok(event) => event,
            Err(RecvError::Lagged(n)) => {
                stats.dropped.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(missed = n, "fan-out fell behind the live feed; other nodes miss these changes");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if event.remote {
            continue;
        }
        let message = match serde_json::to_string(&WireEvent::from_event(&node, &event)) {
            Ok(message) => message,
            Err(_) => continue,
        };
        // The connection manager reconnects by itself; a change published while Redis is down
        // is lost for the other nodes (their clients recover with a snapshot).
        match redis::cmd("PUBLISH").arg(&channel).arg(message).query_async::<i64>(&mut connection).await {
            Ok(_) => {
                stats.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => tracing::warn!(%error, "publishing a live change to Redis failed"),
        }
    }
}

async fn receive_remote(
    client: redis::Client,
    mut pubsub: redis::aio::PubSub,
    kernel: Kernel,
    channel: String,
    node: String,
    stats: Arc<FanoutStats>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        {
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                backoff = Duration::from_millis(100);
                let Ok(text) = message.get_payload::<String>() else {
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let Some((event, shown)) = serde_json::from_str::<WireEvent>(&text)
                    .ok()
                    .and_then(|event| event.shown().map(|shown| (event, shown)))
                else {
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                if event.node == node {
                    continue;
                }
                stats.received.fetch_add(1, Ordering::Relaxed);
                kernel.take_remote_change(
                    OperatorId::from_uuid(event.operator_id),
                    SiteId::from_uuid(event.site_id),
                    SpaceId::from_uuid(event.space_id),
                    shown,
                    event.at,
                );
            }
        }
        // The subscription connection is gone: reconnect with backoff.
        tracing::warn!(retry_in_ms = backoff.as_millis() as u64, "Redis subscription lost; reconnecting");
        loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
            match client.get_async_pubsub().await {
                Ok(mut fresh) => {
                    if fresh.subscribe(&channel).await.is_ok() {
                        pubsub = fresh;
                        tracing::info!("Redis subscription restored");
                        break;
                    }
                }
                Err(error) => tracing::debug!(%error, "Redis still unreachable"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_events_round_trip() {
        let shown = Effective {
            status: SpaceStatus::Occupied,
            confidence: 0.5,
            data_age_secs: Some(3),
            stale: false,
            flapping: true,
            overridden: false,
        };
        let event = LiveEvent {
            seq: 7,
            operator_id: OperatorId::new(),
            site_id: SiteId::new(),
            space_id: SpaceId::new(),
            shown: shown.clone(),
            at: Utc::now(),
            remote: false,
            rendered: Default::default(),
        };
        let wire = WireEvent::from_event("n1", &event);
        let back: WireEvent = serde_json::from_str(&serde_json::to_string(&wire).unwrap()).unwrap();
        assert_eq!(back, wire);
        assert_eq!(back.shown(), Some(shown));
        assert_eq!(WireEvent { status: "parked".into(), ..wire }.shown(), None);
    }
}
