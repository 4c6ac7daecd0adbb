//! Live space state: what sensors say about a space, made trustworthy. Pure logic, no I/O: the
//! ingest service feeds readings in, storage keeps the result, the API shows
//! [`SpaceLive::effective`].
//!
//! - Duplicates (same frame counter and payload, or the same payload within the dedup window
//!   when there is no counter) are dropped.
//! - Readings apply in device-time order: an event older than the state it would replace is
//!   ignored. Heartbeats and repeated states refresh `last_seen` without a change.
//! - A space that has not been heard from within `stale_after` is `unknown` with confidence 0.
//! - Too many changes within `flap_window` mark the space flapping: the state is held with
//!   lowered confidence until it calms down.
//! - An operator override wins until it expires or is cleared.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::space::SpaceStatus;

/// What a reading says about occupancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    Occupied,
    Free,
    /// The message carries no occupancy (a startup or diagnostic frame): it proves the sensor
    /// is alive, nothing more.
    Unknown,
}

/// Tuning of the state machine; per site or vendor later, global for now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveConfig {
    /// Without a counter, the same payload again within this window is a duplicate.
    pub dedup_window: Duration,
    /// No message for this long: the state is unknown. Default: a 3 h heartbeat × 1.5.
    pub stale_after: Duration,
    pub flap_window: Duration,
    /// More changes than this within `flap_window` is flapping.
    pub flap_max_changes: usize,
    /// Confidence while flapping.
    pub flap_confidence: f64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            dedup_window: Duration::seconds(30),
            stale_after: Duration::minutes(270),
            flap_window: Duration::minutes(10),
            flap_max_changes: 6,
            flap_confidence: 0.5,
        }
    }
}

/// An operator's manual state for a space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Override {
    pub status: SpaceStatus,
    pub reason: String,
    pub until: Option<DateTime<Utc>>,
    pub set_at: DateTime<Utc>,
    /// Who set it (an API key id or name), for the audit log.
    pub set_by: String,
}

/// The sensor-derived state of one space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpaceLive {
    /// Free, occupied, or unknown (never heard, or only non-occupancy frames).
    pub sensed: SpaceStatus,
    /// Device time of the reading that set `sensed`.
    pub sensed_since: Option<DateTime<Utc>>,
    /// Device time of the newest reading applied (of any kind).
    pub observed_at: Option<DateTime<Utc>>,
    /// When the newest message arrived, duplicates excluded.
    pub last_seen: Option<DateTime<Utc>>,
    pub last_counter: Option<u32>,
    pub last_payload: Option<u64>,
    /// Device times of recent changes, oldest first, within the flap window.
    pub recent_changes: Vec<DateTime<Utc>>,
    #[serde(rename = "override")]
    pub override_: Option<Override>,
}

/// A space's live state and its revision. Revisions order the states of a space across nodes:
/// each write's is [`Revised::next`] of the state it was computed from, so the higher one is the
/// newer state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revised {
    pub revision: u64,
    pub live: SpaceLive,
}

impl Revised {
    /// A state read where no revision is kept (the database): older than any shared one.
    pub fn unrevised(live: SpaceLive) -> Self {
        Self { revision: 0, live }
    }

    /// The revision for a write computed from this state (see [`next_revision`]).
    pub fn next(&self, now: DateTime<Utc>) -> u64 {
        next_revision(self.revision, now)
    }
}

/// The revision for a write computed from a state of revision `after`: above it and, so that
/// nodes that never saw each other's revisions still order their writes, at least the wall
/// clock in microseconds (a hybrid logical clock).
pub fn next_revision(after: u64, now: DateTime<Utc>) -> u64 {
    let clock = u64::try_from(now.timestamp_micros()).unwrap_or(0);
    clock.max(after.saturating_add(1))
}

impl Default for SpaceLive {
    fn default() -> Self {
        Self {
            sensed: SpaceStatus::Unknown,
            sensed_since: None,
            observed_at: None,
            last_seen: None,
            last_counter: None,
            last_payload: None,
            recent_changes: Vec::new(),
            override_: None,
        }
    }
}

/// One reading to apply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub observation: Observation,
    /// When the device spoke (the network's receive time); drives ordering.
    pub event_time: DateTime<Utc>,
    /// When berth received it.
    pub received_at: DateTime<Utc>,
    pub counter: Option<u32>,
    /// A digest of the payload, for duplicate detection.
    pub payload_digest: u64,
}

/// What applying a reading did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Changed {
        from: SpaceStatus,
        to: SpaceStatus,
    },
    /// Alive, same state (a heartbeat, a repeat, a frame without occupancy).
    Refreshed,
    Duplicate,
    /// Older than the state it would replace.
    OutOfOrder,
}

/// What clients see.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub status: SpaceStatus,
    /// 0 to 1.
    pub confidence: f64,
    /// Seconds since the newest message; `None` if never heard.
    pub data_age_secs: Option<i64>,
    pub stale: bool,
    pub flapping: bool,
    pub overridden: bool,
}

impl SpaceLive {
    pub fn apply(&mut self, reading: &Reading, config: &LiveConfig) -> Applied {
        if self.is_duplicate(reading, config) {
            return Applied::Duplicate;
        }
        if self.observed_at.is_some_and(|observed| reading.event_time < observed) {
            // Still proof of life for a sensor whose clock or network reorders.
            self.last_seen = self.last_seen.max(Some(reading.received_at));
            return Applied::OutOfOrder;
        }
        self.observed_at = Some(reading.event_time);
        self.last_seen = self.last_seen.max(Some(reading.received_at));
        self.last_counter = reading.counter;
        self.last_payload = Some(reading.payload_digest);
        let to = match reading.observation {
            Observation::Occupied => SpaceStatus::Occupied,
            Observation::Free => SpaceStatus::Free,
            Observation::Unknown => return Applied::Refreshed,
        };
        if to == self.sensed {
            return Applied::Refreshed;
        }
        let from = self.sensed;
        self.sensed = to;
        self.sensed_since = Some(reading.event_time);
        self.recent_changes.push(reading.event_time);
        let horizon = reading.event_time - config.flap_window;
        self.recent_changes.retain(|at| *at >= horizon);
        // Oldest first, and flapping is "more than `flap_max_changes` in the window": the
        // newest `flap_max_changes + 1` decide it, so a busy sensor's list stays that short.
        let excess = self.recent_changes.len().saturating_sub(config.flap_max_changes + 1);
        self.recent_changes.drain(..excess);
        Applied::Changed { from, to }
    }

    fn is_duplicate(&self, reading: &Reading, config: &LiveConfig) -> bool {
        let same_payload = self.last_payload == Some(reading.payload_digest);
        match (reading.counter, self.last_counter) {
            (Some(counter), Some(last)) => counter == last && same_payload,
            _ => {
                same_payload
                    && self
                        .observed_at
                        .is_some_and(|observed| (reading.event_time - observed).abs() <= config.dedup_window)
            }
        }
    }

    pub fn is_flapping(&self, now: DateTime<Utc>, config: &LiveConfig) -> bool {
        let horizon = now - config.flap_window;
        self.recent_changes.iter().filter(|at| **at >= horizon).count() > config.flap_max_changes
    }

    /// The active override, if it has not expired.
    pub fn active_override(&self, now: DateTime<Utc>) -> Option<&Override> {
        self.override_.as_ref().filter(|o| o.until.is_none_or(|until| now < until))
    }

    /// The state to show at `now`.
    pub fn effective(&self, now: DateTime<Utc>, config: &LiveConfig) -> Effective {
        let data_age_secs = self.last_seen.map(|seen| (now - seen).num_seconds().max(0));
        let stale = self.last_seen.is_none_or(|seen| now - seen > config.stale_after);
        let flapping = !stale && self.is_flapping(now, config);
        if let Some(manual) = self.active_override(now) {
            return Effective {
                status: manual.status,
                confidence: 1.0,
                data_age_secs,
                stale,
                flapping,
                overridden: true,
            };
        }
        if stale || self.sensed == SpaceStatus::Unknown {
            return Effective {
                status: SpaceStatus::Unknown,
                confidence: 0.0,
                data_age_secs,
                stale,
                flapping: false,
                overridden: false,
            };
        }
        // Full confidence for the first third of the stale window, then down to one half.
        let age = now - self.last_seen.expect("invariant: not stale, so seen");
        let fresh = config.stale_after / 3;
        let mut confidence = if age <= fresh {
            1.0
        } else {
            let spent = (age - fresh).num_milliseconds() as f64;
            let span = (config.stale_after - fresh).num_milliseconds().max(1) as f64;
            1.0 - 0.5 * (spent / span).min(1.0)
        };
        if flapping {
            confidence = confidence.min(config.flap_confidence);
        }
        Effective {
            status: self.sensed,
            confidence: (confidence * 1000.0).round() / 1000.0,
            data_age_secs,
            stale,
            flapping,
            overridden: false,
        }
    }
}

/// A stable 64-bit digest of a payload (FNV-1a), for duplicate detection across restarts.
pub fn payload_digest(payload: &[u8]) -> u64 {
    payload.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        "2026-11-26T10:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(minutes)
    }

    /// Whatever an event's `at` (up to the skew allowance after it was recorded, or long
    /// before: a late upload), its id is at or above the bound for any `from <= at`.
    #[test]
    fn an_events_id_is_never_below_the_bound_for_its_time() {
        for ahead in [Duration::zero(), Duration::minutes(5), Duration::hours(-30)] {
            let recorded = Utc::now();
            let id = uuid::Uuid::now_v7();
            let at = recorded + ahead;
            assert!(id >= SpaceEvent::lowest_id_from(at), "{ahead}");
            assert!(id >= SpaceEvent::lowest_id_from(at - Duration::milliseconds(1)), "{ahead}");
        }
        // And the bound does skip: an event recorded an hour before `from` is below it.
        let old = uuid::Uuid::now_v7();
        assert!(old < SpaceEvent::lowest_id_from(Utc::now() + Duration::hours(1)));
        assert_eq!(SpaceEvent::lowest_id_from(at(0)).get_version_num(), 7);
    }

    #[test]
    fn revisions_rise_past_their_base_and_follow_the_clock() {
        let clock = u64::try_from(at(0).timestamp_micros()).unwrap();
        // From the database (no revision) or an older node: the wall clock.
        assert_eq!(next_revision(0, at(0)), clock);
        assert_eq!(Revised::unrevised(SpaceLive::default()).next(at(0)), clock);
        // From a state written in the same microsecond, or by a node whose clock is ahead: above it.
        assert_eq!(next_revision(clock, at(0)), clock + 1);
        assert_eq!(next_revision(clock + 500, at(0)), clock + 501);
        assert_eq!(next_revision(u64::MAX, at(0)), u64::MAX);
    }

    #[test]
    fn states_round_trip_through_json() {
        let mut live = SpaceLive::default();
        live.apply(&reading(Observation::Occupied, 0, Some(3), b"\x01"), &LiveConfig::default());
        live.override_ = Some(Override {
            status: SpaceStatus::Closed,
            reason: "works".into(),
            until: Some(at(60)),
            set_at: at(1),
            set_by: "key".into(),
        });
        let json = serde_json::to_value(&live).unwrap();
        assert_eq!((json["sensed"].as_str(), json["override"]["status"].as_str()), (Some("occupied"), Some("closed")));
        assert_eq!(serde_json::from_value::<SpaceLive>(json).unwrap(), live);
    }

    fn reading(observation: Observation, minute: i64, counter: Option<u32>, payload: &[u8]) -> Reading {
        Reading {
            observation,
            event_time: at(minute),
            received_at: at(minute),
            counter,
            payload_digest: payload_digest(payload),
        }
    }

    #[test]
    fn changes_refreshes_and_duplicates() {
        let config = LiveConfig::default();
        let mut live = SpaceLive::default();
        assert_eq!(live.effective(at(0), &config).status, SpaceStatus::Unknown);
        let occupied = reading(Observation::Occupied, 0, Some(1), &[1]);
        assert_eq!(
            live.apply(&occupied, &config),
            Applied::Changed { from: SpaceStatus::Unknown, to: SpaceStatus::Occupied }
        );
        assert_eq!(live.apply(&occupied, &config), Applied::Duplicate);
        // Same state, next counter: a heartbeat.
        assert_eq!(live.apply(&reading(Observation::Occupied, 5, Some(2), &[1]), &config), Applied::Refreshed);
        assert_eq!(live.last_seen, Some(at(5)));
        // A startup frame says nothing about occupancy.
        assert_eq!(live.apply(&reading(Observation::Unknown, 6, Some(3), &[9]), &config), Applied::Refreshed);
        assert_eq!(live.sensed, SpaceStatus::Occupied);
        let effective = live.effective(at(7), &config);
        assert_eq!(
            (effective.status, effective.confidence, effective.data_age_secs),
            (SpaceStatus::Occupied, 1.0, Some(60))
        );
        // Without counters, the same payload within the window is a duplicate; later it is not.
        let mut bare = SpaceLive::default();
        bare.apply(&reading(Observation::Free, 0, None, &[0]), &config);
        assert_eq!(bare.apply(&reading(Observation::Free, 0, None, &[0]), &config), Applied::Duplicate);
        assert_eq!(bare.apply(&reading(Observation::Free, 10, None, &[0]), &config), Applied::Refreshed);
        // A counter reset (the device rejoined) is not a duplicate.
        assert_eq!(
            live.apply(&reading(Observation::Free, 20, Some(0), &[0]), &config),
            Applied::Changed { from: SpaceStatus::Occupied, to: SpaceStatus::Free }
        );
    }

    #[test]
    fn an_older_event_never_overwrites_a_newer_state() {
        let config = LiveConfig::default();
        let mut live = SpaceLive::default();
        live.apply(&reading(Observation::Free, 10, Some(11), &[0]), &config);
        let late = Reading { received_at: at(12), ..reading(Observation::Occupied, 5, Some(10), &[1]) };
        assert_eq!(live.apply(&late, &config), Applied::OutOfOrder);
        assert_eq!(live.sensed, SpaceStatus::Free);
        assert_eq!(live.last_seen, Some(at(12)));
    }

    #[test]
    fn silence_makes_a_space_stale_and_confidence_decays_before() {
        let config = LiveConfig::default();
        let mut live = SpaceLive::default();
        live.apply(&reading(Observation::Occupied, 0, Some(1), &[1]), &config);
        assert_eq!(live.effective(at(90), &config).confidence, 1.0);
        let later = live.effective(at(180), &config);
        assert!(later.confidence < 1.0 && later.confidence > 0.5, "{later:?}");
        let stale = live.effective(at(271), &config);
        assert_eq!((stale.status, stale.confidence, stale.stale), (SpaceStatus::Unknown, 0.0, true));
        // A heartbeat brings it back.
        live.apply(&reading(Observation::Occupied, 272, Some(2), &[1]), &config);
        assert_eq!(live.effective(at(272), &config).status, SpaceStatus::Occupied);
    }

    #[test]
    fn flapping_holds_the_state_with_lowered_confidence() {
        let config = LiveConfig::default();
        let mut live = SpaceLive::default();
        for minute in 0..8 {
            let observation = if minute % 2 == 0 { Observation::Occupied } else { Observation::Free };
            live.apply(&reading(observation, minute, Some(minute as u32), &[minute as u8 % 2]), &config);
        }
        let effective = live.effective(at(8), &config);
        assert!(effective.flapping);
        assert_eq!(effective.confidence, 0.5);
        assert_eq!(effective.status, SpaceStatus::Free);
        // Once the window has passed without changes, it is trusted again.
        live.apply(&reading(Observation::Free, 30, Some(100), &[0]), &config);
        let calm = live.effective(at(30), &config);
        assert!(!calm.flapping);
        assert_eq!(calm.confidence, 1.0);
    }

    #[test]
    fn a_busy_sensor_keeps_a_short_list_and_the_same_verdict() {
        let config = LiveConfig::default();
        let mut live = SpaceLive::default();
        // 400 changes, 1.5 s apart: far more than the window's limit, all inside the window.
        for step in 0..400u32 {
            let observation = if step % 2 == 0 { Observation::Occupied } else { Observation::Free };
            let time = at(0) + Duration::milliseconds(1500 * i64::from(step));
            let reading = Reading {
                observation,
                event_time: time,
                received_at: time,
                counter: Some(step),
                payload_digest: payload_digest(&[step as u8 % 2]),
            };
            assert!(matches!(live.apply(&reading, &config), Applied::Changed { .. }));
            assert!(live.recent_changes.len() <= config.flap_max_changes + 1);
            assert_eq!(live.is_flapping(time, &config), step as usize >= config.flap_max_changes, "step {step}");
        }
        assert!(live.recent_changes.windows(2).all(|pair| pair[0] < pair[1]));
        let later = at(0) + Duration::milliseconds(1500 * 400) + config.flap_window;
        assert!(!live.is_flapping(later, &config));
    }

    #[test]
    fn an_override_wins_until_it_expires() {
        let config = LiveConfig::default();
        let mut live = SpaceLive::default();
        live.apply(&reading(Observation::Free, 0, Some(1), &[0]), &config);
        live.override_ = Some(Override {
            status: SpaceStatus::Closed,
            reason: "resurfacing".into(),
            until: Some(at(60)),
            set_at: at(0),
            set_by: "key".into(),
        });
        let shown = live.effective(at(30), &config);
        assert_eq!((shown.status, shown.overridden, shown.confidence), (SpaceStatus::Closed, true, 1.0));
        // Sensor readings keep flowing underneath.
        live.apply(&reading(Observation::Occupied, 40, Some(2), &[1]), &config);
        assert_eq!(live.effective(at(45), &config).status, SpaceStatus::Closed);
        let after = live.effective(at(61), &config);
        assert_eq!((after.status, after.overridden), (SpaceStatus::Occupied, false));
    }

    #[test]
    fn digest_is_stable() {
        assert_eq!(payload_digest(&[]), 0xcbf2_9ce4_8422_2325);
        assert_ne!(payload_digest(&[1]), payload_digest(&[2]));
    }
}

/// One entry of a space's history: a sensed change, or an override set or cleared.
#[derive(Debug, Clone, PartialEq)]
pub struct SpaceEvent {
    pub id: uuid::Uuid,
    pub operator_id: crate::ids::OperatorId,
    pub space_id: crate::ids::SpaceId,
    pub device_id: Option<crate::ids::DeviceId>,
    pub kind: SpaceEventKind,
    pub from: SpaceStatus,
    pub to: SpaceStatus,
    /// Device time for sensed changes; the request time for overrides.
    pub at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    /// The override's reason and who set it.
    pub detail: Option<String>,
}

impl SpaceEvent {
    /// The lowest id an event with `at` at or after `from` can have, for a store to skip the
    /// history before it. An event's id is a UUIDv7 taken when the event is recorded, and no
    /// event is recorded more than the ingest's clock-skew allowance (5 minutes) before its `at`
    /// (sensed times further ahead are taken as the time received; overrides are at the
    /// request time): so its id's milliseconds are at least those of `from` minus the
    /// allowance, and the lowest UUIDv7 of that millisecond sorts at or below it.
    pub fn lowest_id_from(from: DateTime<Utc>) -> uuid::Uuid {
        let millis = (from - crate::ingest::MAX_CLOCK_SKEW).timestamp_millis().max(0) as u64;
        uuid::Builder::from_unix_timestamp_millis(millis, &[0; 10]).into_uuid()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpaceEventKind {
    Sensed,
    OverrideSet,
    OverrideCleared,
}

impl SpaceEventKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            SpaceEventKind::Sensed => "sensed",
            SpaceEventKind::OverrideSet => "override_set",
            SpaceEventKind::OverrideCleared => "override_cleared",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [SpaceEventKind::Sensed, SpaceEventKind::OverrideSet, SpaceEventKind::OverrideCleared]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// How a device is doing, as its messages tell.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceHealth {
    pub last_seen: Option<DateTime<Utc>>,
    pub battery_mv: Option<u32>,
    pub temperature_c: Option<f64>,
    /// The vendor's object of the last decoded message (JSON text).
    pub last_object_json: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub accepted: u64,
    /// Rejected messages by reason (`plugin_rejected`, `plugin_fault`, `duplicate`...).
    pub rejected: std::collections::BTreeMap<String, u64>,
}
