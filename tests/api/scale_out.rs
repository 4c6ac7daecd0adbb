//! Scale-out: two berth nodes on one PostgreSQL database and one Redis. An uplink taken in by
//! node A reaches an SSE client of node B. Runs when `BERTH_TEST_POSTGRES_URL` and
//! `BERTH_TEST_REDIS_URL` are set (CI sets both).

use serde_json::json;

use crate::helpers::{Backend, TestApp, postgres_url};
use crate::live::{BOSCH_EUI, Sse};

fn redis_url() -> Option<String> {
    std::env::var("BERTH_TEST_REDIS_URL").ok().filter(|url| !url.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uplink_into_one_node_reaches_the_stream_of_another() {
    let (Some(_), Some(redis)) = (postgres_url(), redis_url()) else {
        eprintln!("BERTH_TEST_POSTGRES_URL or BERTH_TEST_REDIS_URL not set: two-node run skipped");
        return;
    };
    // A channel of this test's own, so parallel runs do not hear each other.
    let channel = format!("berth:test:{}", uuid::Uuid::new_v4().simple());
    let (redis_a, channel_a) = (redis.clone(), channel.clone());
    let node_a = TestApp::spawn_with(Backend::Postgres, move |config| {
        config.redis.url = Some(berth::config::Secret::new(redis_a));
        config.redis.channel = channel_a;
    })
    .await;
    let database = node_a.config.database.url.clone();
    let node_b = TestApp::spawn_with(Backend::Postgres, move |config| {
        config.database.url = database;
        config.redis.url = Some(berth::config::Secret::new(redis));
        config.redis.channel = channel;
    })
    .await;

    let tenant = node_a.new_tenant("two-nodes").await;
    let (site_id, spaces) = tenant.site_with_spaces(&node_a, "Garage", 2).await;
    let device = json!({"external_id": BOSCH_EUI, "vendor": "bosch", "model": "tps110", "space_id": spaces[0]});
    node_a.post("/v1/devices", &tenant.admin_key, device).await.expect(201);

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

    drop(stream);
    node_b.cleanup().await;
    node_a.cleanup().await;
}
