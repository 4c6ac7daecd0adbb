//! A circuit breaker per provider: after `threshold` consecutive failures the provider is
//! skipped for `cooldown`; then one trial call decides whether it closes again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Failing: calls go elsewhere until the cooldown ends.
    Open,
    /// The cooldown ended: the next call is a trial.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    failures: u32,
    opened_at: Option<Instant>,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self { threshold: threshold.max(1), cooldown, inner: Mutex::default() }
    }

    pub fn state(&self) -> BreakerState {
        let inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match inner.opened_at {
            None => BreakerState::Closed,
            Some(at) if at.elapsed() < self.cooldown => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go to this provider now.
    pub fn allows(&self) -> bool {
        self.state() != BreakerState::Open
    }

    pub fn record_success(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *inner = Inner::default();
    }

    pub fn record_failure(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.failures = inner.failures.saturating_add(1);
        let trial_failed = inner.opened_at.is_some_and(|at| at.elapsed() >= self.cooldown);
        if inner.failures >= self.threshold || trial_failed {
            inner.opened_at = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_closes_after_a_good_trial() {
        let breaker = Breaker::new(3, Duration::from_millis(0));
        breaker.record_failure();
        breaker.record_failure();
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.record_failure();
        // A zero cooldown is over at once: the next call is a trial.
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        breaker.record_success();
        assert_eq!(breaker.state(), BreakerState::Closed);

        let slow = Breaker::new(1, Duration::from_secs(3600));
        slow.record_failure();
        assert_eq!(slow.state(), BreakerState::Open);
        assert!(!slow.allows());
    }
}
