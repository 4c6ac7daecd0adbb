//! The live cache the nodes share: one key per space, `<prefix>:space:<id>`, holding
//! `<revision>:<state as JSON>`. A script replaces a state only with a higher revision, so a
//! slow node's older write never hides a newer one. Keys expire a day after their last write;
//! a space not heard from for that long is read from the database again.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use berth_kernel::ids::SpaceId;
use berth_kernel::live::Revised;
use berth_kernel::ports::SharedLiveStates;

use crate::FanoutError;

/// How long a shared state is kept after its last write.
const TTL_SECS: u64 = 24 * 3600;
/// A Redis call slower than this counts as failed: ingest holds its spaces' locks meanwhile and
/// reads the database instead.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// States per script call, so one large commit does not hold Redis for long.
const CHUNK: usize = 512;
/// Failures are logged at most this often.
const LOG_EVERY_SECS: i64 = 10;

/// Stores each state whose revision is above the stored one's. KEYS: the spaces' keys; ARGV[1]:
/// the TTL; ARGV[i + 1]: `<revision>:<json>` for KEYS[i]. Answers how many were stored.
const SHARE_SCRIPT: &str = r"
local ttl = tonumber(ARGV[1])
local stored = 0
for i, key in ipairs(KEYS) do
  local value = ARGV[i + 1]
  local revision = tonumber(string.match(value, '^(%d+):'))
  local current = redis.call('GET', key)
  local have = -1
  if current then
    local digits = string.match(current, '^(%d+):')
    if digits then have = tonumber(digits) end
  end
  if revision and revision > have then
    redis.call('SET', key, value, 'EX', ttl)
    stored = stored + 1
  end
end
return stored
";

/// The shared live cache in Redis.
pub struct RedisLiveStates {
    connection: redis::aio::ConnectionManager,
    prefix: String,
    script: redis::Script,
    last_logged: AtomicI64,
}

impl RedisLiveStates {
    /// Connects (failing clearly if Redis cannot be reached now); keys are named under `prefix`
    /// (the deployment's channel, so deployments sharing a Redis keep apart).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, FanoutError> {
        let client = redis::Client::open(url).map_err(|e| FanoutError::Url(e.to_string()))?;
        let connection = client.get_connection_manager().await.map_err(|e| FanoutError::Connect(e.to_string()))?;
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            script: redis::Script::new(SHARE_SCRIPT),
            last_logged: AtomicI64::new(i64::MIN),
        })
    }

    /// The key of a space's shared state.
    pub fn key(&self, space: SpaceId) -> String {
        format!("{}:space:{}", self.prefix, space.as_uuid())
    }

    /// Logs a failure, at most once per [`LOG_EVERY_SECS`].
    fn failed(&self, action: &str, error: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let last = self.last_logged.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= LOG_EVERY_SECS
            && self.last_logged.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(error, "{action} the shared live states failed; using the database");
        }
        format!("{action} the shared live states: {error}")
    }
}

/// A stored value: `<revision>:<json>`.
fn encode(state: &Revised) -> Result<String, serde_json::Error> {
    Ok(format!("{}:{}", state.revision, serde_json::to_string(&state.live)?))
}

fn decode(value: &str) -> Option<Revised> {
    let (revision, json) = value.split_once(':')?;
    Some(Revised { revision: revision.parse().ok()?, live: serde_json::from_str(json).ok()? })
}

#[async_trait]
impl SharedLiveStates for RedisLiveStates {
    async fn load(&self, spaces: &[SpaceId]) -> Result<Vec<Option<Revised>>, String> {
        if spaces.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = spaces.iter().map(|space| self.key(*space)).collect();
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("MGET");
        command.arg(&keys);
        let values =
            match tokio::time::timeout(CALL_TIMEOUT, command.query_async::<Vec<Option<String>>>(&mut connection)).await
            {
                Ok(Ok(values)) => values,
                Ok(Err(error)) => return Err(self.failed("reading", &error.to_string())),
                Err(_) => return Err(self.failed("reading", "timed out")),
            };
        // A value this version cannot read is a miss: the database answers for that space.
        Ok(values.into_iter().map(|value| value.as_deref().and_then(decode)).collect())
    }

    async fn share(&self, states: &[(SpaceId, Revised)]) -> Result<(), String> {
        let mut connection = self.connection.clone();
        for chunk in states.chunks(CHUNK) {
            let mut invocation = self.script.prepare_invoke();
            invocation.arg(TTL_SECS);
            for (space, state) in chunk {
                let value = encode(state).map_err(|error| self.failed("writing", &error.to_string()))?;
                invocation.key(self.key(*space)).arg(value);
            }
            match tokio::time::timeout(CALL_TIMEOUT, invocation.invoke_async::<i64>(&mut connection)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(self.failed("writing", &error.to_string())),
                Err(_) => return Err(self.failed("writing", "timed out")),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_kernel::live::SpaceLive;

    #[test]
    fn values_round_trip_and_unreadable_ones_are_misses() {
        let state = Revised {
            revision: 1_764_000_000_000_123,
            live: SpaceLive { last_counter: Some(7), ..Default::default() },
        };
        let value = encode(&state).unwrap();
        assert!(value.starts_with("1764000000000123:{"));
        assert_eq!(decode(&value), Some(state));
        assert_eq!(decode("12:{not json"), None);
        assert_eq!(decode("x:{}"), None);
        assert_eq!(decode("no revision"), None);
    }
}
