//! Short-lived memos of lookups that a burst of requests repeats: when every live client of a
//! node reconnects at once (a restart, a network blip), each request authenticates the same few
//! API keys and opens the same few sites. Only what was found is kept, so a flood of bad keys
//! or unknown ids neither fills a memo nor skips the database.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Above this many entries, a new one first sweeps out the expired.
const SWEEP_ABOVE: usize = 10_000;

/// Values found for keys, each trusted for `ttl` after it was found.
pub(crate) struct Memo<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> Memo<K, V> {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// The value found for `key` less than `ttl` ago.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.get(key).filter(|(_, found)| found.elapsed() < self.ttl).map(|(value, _)| value.clone())
    }

    /// Remembers a value found just now.
    pub(crate) fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= SWEEP_ABOVE {
            let ttl = self.ttl;
            entries.retain(|_, (_, found)| found.elapsed() < ttl);
        }
        entries.insert(key, (value, Instant::now()));
    }

    /// Forgets the entries `stale` picks (a write on this node made them wrong).
    pub(crate) fn forget_where(&self, stale: impl Fn(&K, &V) -> bool) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.retain(|key, (value, _)| !stale(key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_can_be_forgotten() {
        let memo = Memo::new(Duration::from_millis(50));
        memo.put("a", 1);
        memo.put("b", 2);
        assert_eq!((memo.get(&"a"), memo.get(&"c")), (Some(1), None));
        memo.forget_where(|_, value| *value == 1);
        assert_eq!((memo.get(&"a"), memo.get(&"b")), (None, Some(2)));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(memo.get(&"b"), None);
    }

    #[test]
    fn a_full_memo_sweeps_out_the_expired() {
        let memo = Memo::new(Duration::from_millis(20));
        for key in 0..SWEEP_ABOVE {
            memo.put(key, ());
        }
        std::thread::sleep(Duration::from_millis(30));
        memo.put(SWEEP_ABOVE, ());
        assert_eq!(memo.entries.lock().unwrap().len(), 1);
    }
}
