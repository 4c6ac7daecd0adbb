//! Occupancy over time, from the state-change history: the time-weighted share of known spaces
//! that were occupied, overall and per local hour of the day. Pure; the caller fetches events.

use std::collections::HashMap;

use chrono::{DateTime, Timelike, Utc};

use crate::ids::SpaceId;
use crate::live::SpaceEvent;
use crate::site::Timezone;
use crate::space::SpaceStatus;

/// Occupancy percentages (0-100); `None` where no space's state was known.
#[derive(Debug, Clone, PartialEq)]
pub struct OccupancyProfile {
    pub overall: Option<f64>,
    /// Index 0 is 00:00-01:00 local time.
    pub by_hour: Vec<Option<f64>>,
}

/// Each space's state over `[from, to)`: its state before its first event in the window is that
/// event's `from`; a space without events kept `status_now` throughout.
pub fn occupancy_profile(
    spaces: &[(SpaceId, SpaceStatus)],
    events: &[SpaceEvent],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    timezone: Timezone,
) -> OccupancyProfile {
    let mut by_space: HashMap<SpaceId, Vec<&SpaceEvent>> = HashMap::new();
    for event in events.iter().filter(|event| event.at >= from && event.at < to) {
        by_space.entry(event.space_id).or_default().push(event);
    }
    let mut occupied = [0_i64; 24];
    let mut known = [0_i64; 24];
    for (space, status_now) in spaces {
        let mut changes = by_space.remove(space).unwrap_or_default();
        changes.sort_by_key(|event| event.at);
        let mut status = changes.first().map_or(*status_now, |event| event.from);
        let mut since = from;
        for event in changes {
            accumulate(status, since, event.at, timezone, &mut occupied, &mut known);
            status = event.to;
            since = event.at;
        }
        accumulate(status, since, to, timezone, &mut occupied, &mut known);
    }
    let percent = |occupied: i64, known: i64| (known > 0).then(|| occupied as f64 * 100.0 / known as f64);
    OccupancyProfile {
        overall: percent(occupied.iter().sum(), known.iter().sum()),
        by_hour: (0..24).map(|hour| percent(occupied[hour], known[hour])).collect(),
    }
}

/// Adds the milliseconds of `[from, to)` in `status` to the local hours they fall in.
fn accumulate(
    status: SpaceStatus,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    timezone: Timezone,
    occupied: &mut [i64; 24],
    known: &mut [i64; 24],
) {
    if !matches!(status, SpaceStatus::Free | SpaceStatus::Occupied) {
        return;
    }
    let mut at = from;
    while at < to {
        let local = at.with_timezone(&timezone.tz());
        let into_hour_ms =
            i64::from(local.minute() * 60 + local.second()) * 1000 + i64::from(local.timestamp_subsec_millis());
        let hour_end = at + chrono::Duration::milliseconds(3_600_000 - into_hour_ms);
        let until = hour_end.min(to);
        let millis = (until - at).num_milliseconds();
        let hour = local.hour() as usize;
        known[hour] += millis;
        if status == SpaceStatus::Occupied {
            occupied[hour] += millis;
        }
        at = until.max(at + chrono::Duration::milliseconds(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::OperatorId;
    use crate::live::SpaceEventKind;

    fn event(space: SpaceId, from: SpaceStatus, to: SpaceStatus, at: DateTime<Utc>) -> SpaceEvent {
        SpaceEvent {
            id: uuid::Uuid::now_v7(),
            operator_id: OperatorId::new(),
            space_id: space,
            device_id: None,
            kind: SpaceEventKind::Sensed,
            from,
            to,
            at,
            recorded_at: at,
            detail: None,
        }
    }

    #[test]
    fn occupancy_is_weighted_by_time_and_split_by_local_hour() {
        let lisbon = Timezone::parse("Europe/Lisbon").unwrap();
        // 2026-03-02 is winter time in Lisbon: local time is UTC.
        let at = |hour: u32, minute: u32| {
            DateTime::parse_from_rfc3339(&format!("2026-03-02T{hour:02}:{minute:02}:00Z")).unwrap().to_utc()
        };
        let (a, b, c) = (SpaceId::new(), SpaceId::new(), SpaceId::new());
        let events = [
            // a: free until 09:30, then occupied.
            event(a, SpaceStatus::Free, SpaceStatus::Occupied, at(9, 30)),
            // b: occupied until 10:00, then unknown (not counted after).
            event(b, SpaceStatus::Occupied, SpaceStatus::Unknown, at(10, 0)),
        ];
        // c never changed and is free now.
        let spaces = [(a, SpaceStatus::Occupied), (b, SpaceStatus::Unknown), (c, SpaceStatus::Free)];
        let profile = occupancy_profile(&spaces, &events, at(9, 0), at(11, 0), lisbon);
        // 09-10: a 30 min occupied of 60, b 60 of 60, c 0 of 60 → 90/180 = 50%.
        assert_eq!(profile.by_hour[9], Some(50.0));
        // 10-11: a 60 of 60, b unknown, c 0 of 60 → 50%.
        assert_eq!(profile.by_hour[10], Some(50.0));
        assert_eq!(profile.by_hour[8], None);
        assert_eq!(profile.overall, Some(50.0));
    }
}
