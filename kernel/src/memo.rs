//! Short-lived memos of lookups that a burst of requests repeats: when every live client of a
//! node reconnects at once (a restart, a network blip), each request authenticates the same few
//! API keys and opens the same few sites. Only what was found is kept, so a flood of bad keys
//! or unknown ids neither fills a memo nor skips the database.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Above this many entries, a new one first sweeps out the expired.
const SWEEP_ABOVE: usize = 10_000;

/// A lock per key, for work that should run once per key at a time (a lookup, a snapshot
/// query, storing a conversation's message): whoever comes while it runs waits its turn.
#[derive(Default)]
pub(crate) struct Turns<K> {
    locks: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K: Eq + Hash + Clone> Turns<K> {
    /// The lock of `key` (locks nobody holds or waits for are swept out past [`SWEEP_ABOVE`]).
    pub(crate) fn of(&self, key: &K) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if locks.len() >= SWEEP_ABOVE {
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        locks.entry(key.clone()).or_default().clone()
    }
}

/// Values found for keys, each trusted for `ttl` after it was found.
pub(crate) struct Memo<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (V, Instant)>>,
    /// The lookup of a key in progress: others asking for it meanwhile wait for its answer.
    lookups: Turns<K>,
    /// Counts forgets: a lookup that a forget overtook does not remember what it found, which
    /// may be what the forget was for (a key revoked while it was being looked up).
    forgets: AtomicU64,
}

impl<K: Eq + Hash + Clone, V: Clone> Memo<K, V> {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
            lookups: Turns { locks: Mutex::new(HashMap::new()) },
            forgets: AtomicU64::new(0),
        }
    }

    /// The value remembered for `key`, or else what `find` finds (remembered when it is
    /// something). One lookup per key at a time: when an entry expires under a crowd of
    /// requests, one of them asks the database and the others take its answer.
    pub(crate) async fn get_or_find<E, F, Fut>(&self, key: &K, find: F) -> Result<Option<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<V>, E>>,
    {
        self.get_or_find_if(key, |_| true, find).await
    }

    /// [`Memo::get_or_find`], taking from memory only a value `usable` accepts (one recent
    /// enough for this request, say); `find`'s answer is taken as it is.
    pub(crate) async fn get_or_find_if<E, F, Fut>(
        &self,
        key: &K,
        usable: impl Fn(&V) -> bool,
        find: F,
    ) -> Result<Option<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<V>, E>>,
    {
        let asked = Instant::now();
        if let Some(value) = self.found(key, None, &usable) {
            return Ok(Some(value));
        }
        let lookup = self.lookups.of(key);
        let _turn = lookup.lock().await;
        if let Some(value) = self.found(key, Some(asked), &usable) {
            return Ok(Some(value));
        }
        let forgets = self.forgets.load(Ordering::Acquire);
        let found = find().await?;
        if let Some(value) = &found {
            let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if self.forgets.load(Ordering::Acquire) == forgets {
                Self::insert(&mut entries, self.ttl, key.clone(), value.clone());
            }
        }
        Ok(found)
    }

    /// The value found for `key` less than `ttl` ago.
    #[cfg(test)]
    fn get(&self, key: &K) -> Option<V> {
        self.found(key, None, |_| true)
    }

    /// The value found for `key` that `usable` accepts, found less than `ttl` ago or at any
    /// time since `asked`: a value found after a request came is as fresh as the request's own
    /// lookup would have been. A crowd waiting in line for a lookup takes its answer however
    /// long the line took; were it held to the ttl, the waiters served after the ttl would each
    /// look up again, one at a time, and the line would only grow.
    fn found(&self, key: &K, asked: Option<Instant>, usable: impl Fn(&V) -> bool) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .get(key)
            .filter(|(value, found)| {
                usable(value) && (found.elapsed() < self.ttl || asked.is_some_and(|asked| *found >= asked))
            })
            .map(|(value, _)| value.clone())
    }

    /// Remembers a value found just now.
    #[cfg(test)]
    fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Self::insert(&mut entries, self.ttl, key, value);
    }

    fn insert(entries: &mut HashMap<K, (V, Instant)>, ttl: Duration, key: K, value: V) {
        if entries.len() >= SWEEP_ABOVE {
            entries.retain(|_, (_, found)| found.elapsed() < ttl);
        }
        entries.insert(key, (value, Instant::now()));
    }

    /// Forgets the entries `stale` picks (a write on this node made them wrong), and what the
    /// lookups in progress will find.
    pub(crate) fn forget_where(&self, stale: impl Fn(&K, &V) -> bool) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.forgets.fetch_add(1, Ordering::AcqRel);
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

    /// `askers` ask `memo` for one key at once; each lookup takes `lookup`, and each asker
    /// holds its thread for `hold` once answered. Answers how many lookups there were.
    async fn crowd(memo: &Arc<Memo<&'static str, i32>>, askers: usize, lookup: Duration, hold: Duration) -> usize {
        let lookups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let crowd: Vec<_> = (0..askers)
            .map(|_| {
                let (memo, lookups) = (memo.clone(), lookups.clone());
                tokio::spawn(async move {
                    let found = memo
                        .get_or_find(&"key", || async {
                            lookups.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            tokio::time::sleep(lookup).await;
                            Ok::<_, ()>(Some(7))
                        })
                        .await;
                    std::thread::sleep(hold);
                    found
                })
            })
            .collect();
        for asker in crowd {
            assert_eq!(asker.await.unwrap(), Ok(Some(7)));
        }
        lookups.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_crowd_missing_the_same_key_looks_it_up_once() {
        let memo = Arc::new(Memo::new(Duration::from_secs(60)));
        assert_eq!(crowd(&memo, 50, Duration::from_millis(20), Duration::ZERO).await, 1);
        // Nothing found is not remembered: the next asker looks again.
        let missing = memo.get_or_find(&"other", || async { Ok::<_, ()>(None) }).await;
        assert_eq!(missing, Ok(None));
        assert_eq!(memo.get_or_find(&"other", || async { Ok::<_, ()>(Some(1)) }).await, Ok(Some(1)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_crowd_served_after_the_ttl_still_takes_the_one_answer() {
        // Each asker holds the only thread a while after its answer, so the last of the line
        // are served long after the ttl: they asked before the answer was found and take it.
        let memo = Arc::new(Memo::new(Duration::from_millis(10)));
        assert_eq!(crowd(&memo, 40, Duration::from_millis(5), Duration::from_millis(1)).await, 1);
        // One who comes after the ttl looks up again.
        std::thread::sleep(Duration::from_millis(15));
        assert_eq!(memo.get_or_find(&"key", || async { Ok::<_, ()>(Some(8)) }).await, Ok(Some(8)));
    }

    #[tokio::test]
    async fn a_lookup_overtaken_by_a_forget_is_not_remembered() {
        let memo = Memo::new(Duration::from_secs(60));
        let found = memo
            .get_or_find(&"key", || async {
                // Revoked while being looked up.
                memo.forget_where(|key, _| *key == "key");
                Ok::<_, ()>(Some(1))
            })
            .await;
        assert_eq!((found, memo.get(&"key")), (Ok(Some(1)), None));
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
