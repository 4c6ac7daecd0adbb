//! The live feed: every change of a space's shown state, in order, to whoever listens (the SSE
//! streams, the fan-out to other nodes). Publishing never waits: a listener that falls behind
//! the buffer loses its place and must resubscribe; the pipeline never stalls for it.
//!
//! Event ids are `{epoch}.{seq}`: the epoch is random per process, so an id from before a
//! restart, or from another node, is recognised as foreign and answered with a fresh snapshot
//! rather than a wrong replay.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::ids::{OperatorId, SiteId, SpaceId};
use crate::live::Effective;

/// One change of what a space shows.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveEvent {
    /// Position in this node's feed: the SSE event id, for `Last-Event-ID` resumption.
    pub seq: u64,
    pub operator_id: OperatorId,
    pub site_id: SiteId,
    pub space_id: SpaceId,
    pub shown: Effective,
    pub at: DateTime<Utc>,
    /// Came from another node (through the fan-out), so it is not sent back out.
    pub remote: bool,
    /// The event as a transport renders it, made once by the first listener that sends it and
    /// shared by all the others (ten thousand SSE clients, one serialisation).
    pub rendered: std::sync::OnceLock<Arc<str>>,
}

/// Events kept for resumption, and the per-listener queue bound.
pub const FEED_BUFFER: usize = 8192;

pub struct LiveFeed {
    epoch: u32,
    sender: broadcast::Sender<Arc<LiveEvent>>,
    /// The newest events, oldest first, and the next sequence number.
    recent: Mutex<(VecDeque<Arc<LiveEvent>>, u64)>,
}

impl Default for LiveFeed {
    fn default() -> Self {
        use rand::Rng;
        Self {
            epoch: rand::thread_rng().r#gen(),
            sender: broadcast::channel(FEED_BUFFER).0,
            recent: Mutex::new((VecDeque::new(), 1)),
        }
    }
}

impl LiveFeed {
    /// Assigns the next sequence number and sends a change made on this node.
    pub fn publish(&self, operator_id: OperatorId, site_id: SiteId, space_id: SpaceId, shown: Effective) -> u64 {
        self.send(operator_id, site_id, space_id, shown, crate::service::now(), false)
    }

    /// Sends a change another node made (received through the fan-out).
    pub fn publish_remote(
        &self,
        operator_id: OperatorId,
        site_id: SiteId,
        space_id: SpaceId,
        shown: Effective,
        at: DateTime<Utc>,
    ) -> u64 {
        self.send(operator_id, site_id, space_id, shown, at, true)
    }

    fn send(
        &self,
        operator_id: OperatorId,
        site_id: SiteId,
        space_id: SpaceId,
        shown: Effective,
        at: DateTime<Utc>,
        remote: bool,
    ) -> u64 {
        let mut recent = self.recent.lock().expect("invariant: feed lock is never poisoned");
        let seq = recent.1;
        recent.1 += 1;
        let event = Arc::new(LiveEvent {
            seq,
            operator_id,
            site_id,
            space_id,
            shown,
            at,
            remote,
            rendered: Default::default(),
        });
        if recent.0.len() == FEED_BUFFER {
            recent.0.pop_front();
        }
        recent.0.push_back(event.clone());
        // No listener is fine.
        let _ = self.sender.send(event);
        seq
    }

    /// The SSE event id of sequence number `seq`.
    pub fn event_id(&self, seq: u64) -> String {
        format!("{:08x}.{seq}", self.epoch)
    }

    /// The sequence number in an event id this feed issued; `None` for a foreign or garbled id.
    pub fn parse_event_id(&self, id: &str) -> Option<u64> {
        let (epoch, seq) = id.trim().split_once('.')?;
        (u32::from_str_radix(epoch, 16).ok()? == self.epoch).then_some(())?;
        seq.parse().ok()
    }

    /// The sequence number of the newest event (0 if none yet).
    pub fn last_seq(&self) -> u64 {
        self.recent.lock().expect("invariant: feed lock is never poisoned").1 - 1
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.sender.subscribe()
    }

    /// The events after `seq`, if the buffer still reaches back that far.
    pub fn since(&self, seq: u64) -> Option<Vec<Arc<LiveEvent>>> {
        let recent = self.recent.lock().expect("invariant: feed lock is never poisoned");
        let next = recent.1;
        let oldest = recent.0.front().map_or(next, |event| event.seq);
        if seq >= next || seq + 1 < oldest {
            return None;
        }
        Some(recent.0.iter().filter(|event| event.seq > seq).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::SpaceStatus;

    fn shown() -> Effective {
        Effective {
            status: SpaceStatus::Free,
            confidence: 1.0,
            data_age_secs: Some(0),
            stale: false,
            flapping: false,
            overridden: false,
        }
    }

    #[test]
    fn events_are_numbered_replayable_and_never_block() {
        let feed = LiveFeed::default();
        let (operator, site, space) = (OperatorId::new(), SiteId::new(), SpaceId::new());
        assert_eq!(feed.last_seq(), 0);
        let mut listener = feed.subscribe();
        for _ in 0..3 {
            feed.publish(operator, site, space, shown());
        }
        assert_eq!(feed.last_seq(), 3);
        assert_eq!(listener.try_recv().unwrap().seq, 1);
        let replay: Vec<u64> = feed.since(1).unwrap().iter().map(|event| event.seq).collect();
        assert_eq!(replay, [2, 3]);
        assert_eq!(feed.since(3).unwrap().len(), 0);
        assert!(feed.since(99).is_none());
        // A listener that never reads does not hold anyone up; it finds out it lagged.
        for _ in 0..FEED_BUFFER + 10 {
            feed.publish(operator, site, space, shown());
        }
        assert!(matches!(listener.try_recv(), Err(broadcast::error::TryRecvError::Lagged(_))));
        assert!(feed.since(1).is_none(), "too old to replay");
    }

    #[test]
    fn event_ids_belong_to_one_feed() {
        let (feed, other) = (LiveFeed::default(), LiveFeed::default());
        let id = feed.event_id(42);
        assert_eq!(feed.parse_event_id(&id), Some(42));
        assert_eq!(other.parse_event_id(&id), None, "another node's or an earlier run's id");
        assert_eq!(feed.parse_event_id("42"), None);
        assert_eq!(feed.parse_event_id("zz.1"), None);
    }
}
