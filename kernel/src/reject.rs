//! Rejected device data: counted by reason (metrics), and logged at most once per device per
//! interval, so a misconfigured sensor fleet cannot flood the log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one device's rejections are logged.
pub const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Devices remembered before old entries are pruned.
const MAX_TRACKED: usize = 100_000;

pub struct RejectLog {
    interval: Duration,
    last_logged: Mutex<HashMap<String, Instant>>,
}

impl Default for RejectLog {
    fn default() -> Self {
        Self::new(REJECT_LOG_INTERVAL)
    }
}

impl RejectLog {
    pub fn new(interval: Duration) -> Self {
        Self { interval, last_logged: Mutex::new(HashMap::new()) }
    }

    /// Counts a rejection and logs it unless this device was logged within the interval.
    /// `device` is whatever identifies the sender (an external id, a topic's device segment).
    pub fn reject(&self, source: &'static str, reason: &'static str, device: &str, detail: &dyn std::fmt::Display) {
        metrics::counter!("berth_ingest_rejected_total", "source" => source, "reason" => reason).increment(1);
        if self.should_log(device, Instant::now()) {
            tracing::warn!(source, reason, device, %detail, "device data rejected (logged once per device per minute)");
        }
    }

    fn should_log(&self, device: &str, now: Instant) -> bool {
        let mut last_logged = self.last_logged.lock().expect("invariant: reject log lock is never poisoned");
        if let Some(at) = last_logged.get(device)
            && now.duration_since(*at) < self.interval
        {
            return false;
        }
        if last_logged.len() >= MAX_TRACKED {
            let interval = self.interval;
            last_logged.retain(|_, at| now.duration_since(*at) < interval);
            if last_logged.len() >= MAX_TRACKED {
                last_logged.clear();
            }
        }
        last_logged.insert(device.to_owned(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_device_per_interval() {
        let log = RejectLog::new(Duration::from_secs(60));
        let start = Instant::now();
        assert!(log.should_log("a", start));
        assert!(!log.should_log("a", start + Duration::from_secs(59)));
        assert!(log.should_log("b", start + Duration::from_secs(1)));
        assert!(log.should_log("a", start + Duration::from_secs(61)));
    }
}
