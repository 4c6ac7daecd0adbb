//! Scale-out: two berth nodes on one PostgreSQL database and one Redis. An uplink taken in by
//! node A reaches an SSE client of node B. Runs when `BERTH_TEST_POSTGRES_URL` and
//! `BERTH_TEST_REDIS_URL` are set (CI sets both).

use berth_kernel::ports::SharedLiveStates;
use serde_json::json;

use crate::helpers::{Backend, Tenant, TestApp, postgres_url};
use crate::live::{BOSCH_EUI, Sse};

/// Redis's URL when PostgreSQL is there too; otherwise the test is skipped (and says so).
fn redis_with_postgres() -> Option<String> {
    let redis = std::env::var("BERTH_TEST_REDIS_URL").ok().filter(|url| !url.is_empty());
    if redis.is_none() || postgres_url().is_none() {
        eprintln!("BERTH_TEST_POSTGRES_URL or BERTH_TEST_REDIS_URL not set: two-node run skipped");
        return None;
    }
    redis
}

/// A tenant with a site of `n` spaces, the first watched by the Bosch sensor.
async fn tenant_with_sensor(app: &TestApp, slug: &str, n: usize) -> (Tenant, String, Vec<String>) {
    let tenant = app.new_tenant(slug).await;
    let (site_id, spaces) = tenant.site_with_spaces(app, "Garage", n).await;
    let device = json!({"external_id": BOSCH_EUI, "vendor": "bosch", "model": "tps110", "space_id": spaces[0]});
    app.post("/v1/devices", &tenant.admin_key, device).await.expect(201);
    (tenant, site_id, spaces)
}

/// A node on Redis at `redis` with the pub/sub `channel`; on `database` when given (another
/// node's), else on a PostgreSQL database of its own.
async fn node(redis: &str, channel: &str, database: Option<berth::config::Secret>) -> TestApp {
    let (redis, channel) = (redis.to_owned(), channel.to_owned());
    TestApp::spawn_with(Backend::Postgres, move |config| {
        if database.is_some() {
            config.database.url = database;
        }
        config.redis.url = Some(berth::config::Secret::new(redis));
        config.redis.channel = channel;
    })
    .await
}

/// Two nodes on one PostgreSQL database and Redis, with a channel of the test's own (so
/// parallel runs do not hear each other).
async fn two_nodes(redis: &str) -> (TestApp, TestApp, String) {
    let channel = format!("berth:test:{}", uuid::Uuid::new_v4().simple());
    let node_a = node(redis, &channel, None).await;
    let node_b = node(redis, &channel, node_a.config.database.url.clone()).await;
    (node_a, node_b, channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uplink_into_one_node_reaches_the_stream_of_another() {
    let Some(redis) = redis_with_postgres() else { return };
    let (node_a, node_b, _) = two_nodes(&redis).await;

    let (tenant, site_id, spaces) = tenant_with_sensor(&node_a, "two-nodes", 2).await;

    // A client of node B: its snapshot comes from the shared database.
    let path = format!("/v1/sites/{site_id}/availability/stream");
    let mut stream = Sse::open(&node_b, &path, &tenant.staff_key, None).await;
    let (_, kind, snapshot) = stream.next().await;
    assert_eq!((kind.as_str(), snapshot["snapshot"]["total"].as_u64()), ("snapshot", Some(2)));

    // The uplink goes into node A...
    let uplink = json!({"device": BOSCH_EUI, "f_port": 1, "payload_hex": "01", "counter": 1, "time": chrono::Utc::now().to_rfc3339()});
    node_a.post("/v1/ingest/uplinks", &tenant.integration_key, uplink).await.expect(202);
    // ...and node B's client sees it.
    let (_, kind, change) = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
        .await
        .expect("the change reached node B");
    assert_eq!(kind, "space");
    assert_eq!(
        (change["space"]["id"].as_str(), change["space"]["status"].as_str()),
        (Some(spaces[0].as_str()), Some("occupied"))
    );
    // Node B's own reads agree (one database).
    let shown = node_b.get(&format!("/v1/spaces/{}", spaces[0]), &tenant.staff_key).await.expect(200);
    assert_eq!(shown["status"], "occupied");

    // A key revoked on node A: refused there at once, and by node B (which authenticated it a
    // moment ago, and remembers it for a short while) within API_KEY_MEMO_TTL.
    let created =
        node_a.post("/v1/keys", &tenant.admin_key, json!({"name": "kiosk", "kind": "operator"})).await.expect(201);
    let (token, key_id) = (created["token"].as_str().unwrap(), created["key"]["id"].as_str().unwrap());
    node_a.get("/v1/sites", token).await.expect(200);
    node_b.get("/v1/sites", token).await.expect(200);
    node_a.delete(&format!("/v1/keys/{key_id}"), &tenant.admin_key).await.expect(200);
    node_a.get("/v1/sites", token).await.problem(401);
    let revoked = std::time::Instant::now();
    while node_b.get("/v1/sites", token).await.status != 401 {
        assert!(
            revoked.elapsed() < berth_kernel::service::API_KEY_MEMO_TTL + std::time::Duration::from_secs(2),
            "node B still takes a key revoked {:?} ago",
            revoked.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    drop(stream);
    node_b.cleanup().await;
    node_a.cleanup().await;
}

/// The nodes share their live cache: a reading that node A applied without changing what the
/// space shows (so without a notification) is known to node B, which already holds an older
/// state of that space in its own cache. A retried delivery into B is then a duplicate and a
/// late, older reading is out of order, as on one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_their_live_cache() {
    let Some(redis) = redis_with_postgres() else { return };
    let (node_a, node_b, channel) = two_nodes(&redis).await;
    let (tenant, _, spaces) = tenant_with_sensor(&node_a, "shared-cache", 1).await;
    let key = &tenant.integration_key;
    let start = chrono::Utc::now() - chrono::Duration::seconds(60);
    let uplink = |counter: u32, payload: &str, seconds: i64| {
        let time = (start + chrono::Duration::seconds(seconds)).to_rfc3339();
        json!({"device": BOSCH_EUI, "f_port": 1, "payload_hex": payload, "counter": counter, "time": time})
    };
    let result = |answer: serde_json::Value| answer["result"].as_str().unwrap().to_owned();

    // Node B takes the first reading and keeps the space's state in its cache.
    let first = node_b.post("/v1/ingest/uplinks", key, uplink(1, "01", 0)).await.expect(202);
    assert_eq!(result(first), "changed");
    // Node A takes the next one: the same status, so no change is published.
    let heartbeat = node_a.post("/v1/ingest/uplinks", key, uplink(2, "01", 20)).await.expect(202);
    assert_eq!(result(heartbeat), "refreshed");
    // The same message retried into node B: a duplicate, though B's own cache says counter 1.
    let retried = node_b.post("/v1/ingest/uplinks", key, uplink(2, "01", 20)).await.expect(202);
    assert_eq!(result(retried), "duplicate");
    // A reading older than A's, late into B: out of order, not a change to free.
    let late = node_b.post("/v1/ingest/uplinks", key, uplink(3, "00", 10)).await.expect(202);
    assert_eq!(result(late), "out_of_order");
    let shown = node_a.get(&format!("/v1/spaces/{}", spaces[0]), &tenant.staff_key).await.expect(200);
    assert_eq!(shown["status"], "occupied");

    // What Redis holds for the space: the newest state, with its revision.
    let shared = berth_redis::RedisLiveStates::connect(&redis, &channel).await.unwrap();
    let space = berth_kernel::ids::SpaceId::from_uuid(spaces[0].parse().unwrap());
    let state = shared.load(&[space]).await.unwrap().pop().flatten().expect("the space's state is shared");
    assert!(state.revision > 0);
    assert_eq!((state.live.sensed.as_str(), state.live.last_counter), ("occupied", Some(2)));

    // An override on node B is shared too: node A's next reading starts from it.
    let path = format!("/v1/spaces/{}/override", spaces[0]);
    node_b.put(&path, &tenant.admin_key, json!({"status": "closed", "reason": "works"})).await.expect(200);
    let next = node_a.post("/v1/ingest/uplinks", key, uplink(4, "00", 30)).await.expect(202);
    assert_eq!((result(next.clone()), next["status"].as_str()), ("changed".to_owned(), Some("closed")));

    node_b.cleanup().await;
    node_a.cleanup().await;
}

/// A TCP relay to Redis that the test can cut, as a network partition would.
struct Relay {
    url: String,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn to(redis: &str) -> Self {
        let upstream = redis.trim_start_matches("redis://").trim_end_matches('/').to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let accepted = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream.as_str()).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                accepted.lock().unwrap().push(relay);
            }
        });
        tasks.lock().unwrap().push(accept);
        Self { url, tasks }
    }

    /// Drops every connection and refuses new ones.
    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// Redis is a cache and a notice board, never the record: when it goes away, ingest goes on
/// from the node's own cache and the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_goes_on_when_redis_goes_away() {
    let Some(redis) = redis_with_postgres() else { return };
    let relay = Relay::to(&redis).await;
    let app = node(&relay.url, &format!("berth:test:{}", uuid::Uuid::new_v4().simple()), None).await;
    let (tenant, site_id, spaces) = tenant_with_sensor(&app, "redis-away", 1).await;
    let key = &tenant.integration_key;
    let now = chrono::Utc::now();
    let uplink = |counter: u32, payload: &str, seconds: i64| {
        let time = (now - chrono::Duration::seconds(60 - seconds)).to_rfc3339();
        json!({"device": BOSCH_EUI, "f_port": 1, "payload_hex": payload, "counter": counter, "time": time})
    };
    let taken = app.post("/v1/ingest/uplinks", key, uplink(1, "01", 0)).await.expect(202);
    assert_eq!(taken["result"], "changed");

    relay.cut();
    let again = app.post("/v1/ingest/uplinks", key, uplink(1, "01", 0)).await.expect(202);
    assert_eq!(again["result"], "duplicate");
    let freed = app.post("/v1/ingest/uplinks", key, uplink(2, "00", 10)).await.expect(202);
    assert_eq!((freed["result"].as_str(), freed["status"].as_str()), (Some("changed"), Some("free")));
    let availability = app.get(&format!("/v1/sites/{site_id}/availability"), &tenant.staff_key).await.expect(200);
    assert_eq!(availability["by_status"]["free"], 1);
    // An override is stored and shown though it cannot be shared.
    let path = format!("/v1/spaces/{}/override", spaces[0]);
    let shown = app.put(&path, &tenant.admin_key, json!({"status": "closed", "reason": "works"})).await.expect(200);
    assert_eq!(shown["status"], "closed");
    app.cleanup().await;
}
