//! Ingest webhooks with the real network-server fixtures, live availability, dedup and ordering,
//! overrides with their audit trail, device health, and bad input.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::TestApp;

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("shared/uplink-envelopes"))
        .find(|dir| dir.exists())
        .expect("shared/uplink-envelopes beside the checkout");
    std::fs::read(dir.join(name)).unwrap()
}

/// The Bosch parking sensor of the TTN and ChirpStack captures.
pub(crate) const BOSCH_EUI: &str = "1000000000000001";

async fn post_raw(app: &TestApp, path: &str, token: &str, body: Vec<u8>) -> crate::helpers::Resp {
    app.raw(Method::POST, path, Some(token), "application/json", body).await
}

fn count(availability: &Value, status: &str) -> u64 {
    availability["by_status"][status].as_u64().unwrap()
}

async fn uplinks_drive_the_space(app: &TestApp) {
    let tenant = app.new_tenant("porto").await;
    let (site_id, spaces) = tenant.site_with_spaces(app, "Garage", 3).await;
    let device = app
        .post(
            "/v1/devices",
            &tenant.admin_key,
            json!({"external_id": BOSCH_EUI.to_lowercase(), "vendor": "bosch", "model": "tps110", "space_id": spaces[0]}),
        )
        .await
        .expect(201);
    let device_id = device["id"].as_str().unwrap();
    let key = &tenant.integration_key;
    let availability = app.get(&format!("/v1/sites/{site_id}/availability"), &tenant.staff_key).await.expect(200);
    assert_eq!((availability["total"].as_u64(), count(&availability, "unknown")), (Some(3), 3));

    // The Things Stack webhook: the captured heartbeat says occupied.
    let taken = post_raw(app, "/v1/ingest/ttn", key, fixture("ttn-v3-up.bosch-parking.json")).await.expect(202);
    assert_eq!(taken["result"], "changed");
    assert_eq!((taken["status"].as_str(), taken["space_id"].as_str()), (Some("occupied"), Some(spaces[0].as_str())));
    // Delivered twice (a retry): a duplicate.
    let again = post_raw(app, "/v1/ingest/ttn", key, fixture("ttn-v3-up.bosch-parking.json")).await.expect(202);
    assert_eq!(again["result"], "duplicate");

    // ChirpStack's capture of the same sensor is newer than the TTN one and says the same.
    let chirp = post_raw(app, "/v1/ingest/chirpstack?event=up", key, fixture("chirpstack-v4-up.bosch-parking.json"))
        .await
        .expect(202);
    assert_eq!(chirp["result"], "refreshed");
    let ignored =
        post_raw(app, "/v1/ingest/chirpstack?event=status", key, fixture("chirpstack-v4-status.milesight-am308.json"))
            .await
            .expect(202);
    assert_eq!(ignored["result"], "ignored");
    let join = post_raw(app, "/v1/ingest/ttn", key, fixture("ttn-v3-join.docs.json")).await.expect(202);
    assert_eq!(join["result"], "ignored");

    // Native envelope: the bay empties now; an older "occupied" arriving late changes nothing.
    let now = chrono::Utc::now();
    let free = json!({"device": BOSCH_EUI, "f_port": 1, "payload_hex": "00", "counter": 10, "time": now.to_rfc3339()});
    let taken = app.post("/v1/ingest/uplinks", key, free).await.expect(202);
    assert_eq!((taken["result"].as_str(), taken["status"].as_str()), (Some("changed"), Some("free")));
    let late = json!({"device": BOSCH_EUI, "f_port": 1, "payload_hex": "01", "counter": 9,
        "time": (now - chrono::Duration::minutes(1)).to_rfc3339()});
    assert_eq!(app.post("/v1/ingest/uplinks", key, late).await.expect(202)["result"], "out_of_order");

    let availability = app.get(&format!("/v1/sites/{site_id}/availability"), &tenant.staff_key).await.expect(200);
    assert_eq!((count(&availability, "free"), count(&availability, "unknown")), (1, 2));
    assert_eq!(availability["free_by_vehicle_type"]["car"], 1);
    let space = availability["spaces"].as_array().unwrap().iter().find(|s| s["id"] == spaces[0].as_str()).unwrap();
    assert_eq!((space["status"].as_str(), space["confidence"].as_f64()), (Some("free"), Some(1.0)));
    assert!(space["data_age_secs"].as_i64().unwrap() < 60, "{space}");
    // The space resource agrees.
    let resource = app.get(&format!("/v1/spaces/{}", spaces[0]), &tenant.staff_key).await.expect(200);
    assert_eq!(resource["status"], "free");
    // Every space response carries its confidence and data age; a space never heard has none.
    assert_eq!((resource["confidence"].as_f64(), resource["stale"].as_bool()), (Some(1.0), Some(false)));
    assert!(resource["data_age_secs"].as_i64().unwrap() < 60, "{resource}");
    let listed = app.get(&format!("/v1/spaces?site_id={site_id}"), &tenant.staff_key).await.expect(200);
    let listed = listed["items"].as_array().unwrap();
    let sensed = listed.iter().find(|s| s["id"] == spaces[0].as_str()).unwrap();
    assert_eq!((sensed["status"].as_str(), sensed["confidence"].as_f64()), (Some("free"), Some(1.0)));
    assert!(sensed["data_age_secs"].is_i64());
    let silent = listed.iter().find(|s| s["id"] == spaces[1].as_str()).unwrap();
    assert_eq!((silent["status"].as_str(), silent["confidence"].as_f64()), (Some("unknown"), Some(0.0)));
    assert!(silent.get("data_age_secs").is_none(), "{silent}");

    // Operator override wins, is audited, and clears.
    let path = format!("/v1/spaces/{}/override", spaces[0]);
    app.put(&path, &tenant.staff_key, json!({"status": "closed", "reason": "x"})).await.problem(403);
    let problem = app.put(&path, &tenant.admin_key, json!({"status": "closed", "reason": ""})).await.problem(422);
    assert_eq!(problem["field"], "reason");
    let shown =
        app.put(&path, &tenant.admin_key, json!({"status": "closed", "reason": "resurfacing"})).await.expect(200);
    assert_eq!((shown["status"].as_str(), shown["overridden"].as_bool()), (Some("closed"), Some(true)));
    let still = json!({"device": BOSCH_EUI, "f_port": 1, "payload_hex": "01", "counter": 11, "time": chrono::Utc::now().to_rfc3339()});
    let taken = app.post("/v1/ingest/uplinks", key, still).await.expect(202);
    assert_eq!((taken["result"].as_str(), taken["status"].as_str()), (Some("changed"), Some("closed")));
    let resource = app.get(&format!("/v1/spaces/{}", spaces[0]), &tenant.staff_key).await.expect(200);
    assert_eq!((resource["status"].as_str(), resource["overridden"].as_bool()), (Some("closed"), Some(true)));
    app.delete(&path, &tenant.admin_key).await.expect(204);
    let availability = app.get(&format!("/v1/sites/{site_id}/availability"), &tenant.staff_key).await.expect(200);
    assert_eq!(count(&availability, "occupied"), 1);
    let history = app.get(&format!("/v1/spaces/{}/history", spaces[0]), &tenant.staff_key).await.expect(200);
    let kinds: Vec<&str> = history["items"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["override_cleared", "sensed", "override_set", "sensed", "sensed"]);
    assert!(history["items"][2]["detail"].as_str().unwrap().contains("resurfacing"));

    // Device health counts what came in and what was refused.
    let rejected = json!({"device": BOSCH_EUI, "f_port": 99, "payload_hex": "00"});
    let problem = app.post("/v1/ingest/uplinks", key, rejected).await.problem(422);
    assert_eq!(problem["field"], "payload");
    let health = app.get(&format!("/v1/devices/{device_id}/health"), &tenant.staff_key).await.expect(200);
    assert_eq!(health["rejected"], json!({"duplicate": 1, "plugin_rejected": 1}));
    assert_eq!(health["accepted"], 5);
    assert_eq!(health["temperature_c"], 18.0);
    assert!(health["last_error"].as_str().unwrap().contains("FPort"), "{health}");
    assert_eq!(health["last_decoded"]["occupied"], true);
}

async fn bad_uplinks_are_refused_with_reasons(app: &TestApp) {
    let tenant = app.new_tenant("lisbon").await;
    let key = &tenant.integration_key;
    let unknown = json!({"device": "70B3D57ED00000FF", "f_port": 1, "payload_hex": "01"});
    let problem = app.post("/v1/ingest/uplinks", key, unknown).await.problem(422);
    assert_eq!(problem["field"], "device");
    for (path, body, message) in [
        ("/v1/ingest/uplinks", br#"{"device": "x", "f_port": 1, "payload_base64": "%%"}"#.to_vec(), "not base64"),
        ("/v1/ingest/ttn", b"{oops".to_vec(), "not JSON"),
        ("/v1/ingest/ttn", fixture("ttn-v3-event-stream.as.up.data.forward.json"), "Events API"),
        ("/v1/ingest/chirpstack", br#"{"hello": true}"#.to_vec(), "not a ChirpStack uplink"),
    ] {
        let problem = post_raw(app, path, key, body).await.problem(400);
        assert!(problem["detail"].as_str().unwrap().contains(message), "{path}: {problem}");
    }
    // Only integration and operator-admin keys push data.
    let body = json!({"device": "x", "f_port": 1, "payload_hex": "01"});
    app.post("/v1/ingest/uplinks", &tenant.staff_key, body).await.problem(403);
}

/// A minimal Server-Sent Events reader over a streaming response.
pub(crate) struct Sse {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl Sse {
    pub(crate) async fn open(app: &TestApp, path: &str, token: &str, last_event_id: Option<&str>) -> Sse {
        Self::open_with(&app.client, app, path, token, last_event_id).await.0
    }

    /// Opens the stream through `client`; also answers the HTTP version it came over.
    pub(crate) async fn open_with(
        client: &reqwest::Client,
        app: &TestApp,
        path: &str,
        token: &str,
        last_event_id: Option<&str>,
    ) -> (Sse, reqwest::Version) {
        let mut request = client.get(format!("{}{path}", app.base_url)).bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let version = response.version();
        (Sse { body: Box::pin(response.bytes_stream()), buffer: String::new() }, version)
    }

    /// The next event with data: (id, event type, data).
    pub(crate) async fn next(&mut self) -> (String, String, Value) {
        use futures_util::StreamExt;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut kind, mut data) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        id = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("event:") {
                        kind = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim());
                    }
                }
                if !data.is_empty() {
                    return (id, kind, serde_json::from_str(&data).unwrap());
                }
                continue;
            }
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(20), self.body.next())
                .await
                .expect("an event within 20 s")
                .expect("stream open")
                .unwrap();
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

async fn availability_streams_and_resumes(app: &TestApp) {
    let tenant = app.new_tenant("braga").await;
    let (site_id, spaces) = tenant.site_with_spaces(app, "Lot", 2).await;
    let device = json!({"external_id": BOSCH_EUI, "vendor": "bosch", "model": "tps110", "space_id": spaces[1]});
    app.post("/v1/devices", &tenant.admin_key, device).await.expect(201);
    let path = format!("/v1/sites/{site_id}/availability/stream");
    let mut stream = Sse::open(app, &path, &tenant.staff_key, None).await;
    let (snapshot_id, kind, snapshot) = stream.next().await;
    assert_eq!(kind, "snapshot");
    assert_eq!(snapshot["snapshot"]["total"], 2);

    let uplink = |payload: &str, counter: u32| json!({"device": BOSCH_EUI, "f_port": 1, "payload_hex": payload, "counter": counter, "time": chrono::Utc::now().to_rfc3339()});
    app.post("/v1/ingest/uplinks", &tenant.integration_key, uplink("01", 1)).await.expect(202);
    let (first_id, kind, change) = stream.next().await;
    assert_eq!(kind, "space");
    assert_eq!(
        (change["space"]["id"].as_str(), change["space"]["status"].as_str()),
        (Some(spaces[1].as_str()), Some("occupied"))
    );
    let seq = |id: &str| id.split_once('.').unwrap().1.parse::<u64>().unwrap();
    assert!(seq(&first_id) > seq(&snapshot_id));

    // Disconnected, the client misses a change; resuming replays exactly that one.
    drop(stream);
    app.post("/v1/ingest/uplinks", &tenant.integration_key, uplink("00", 2)).await.expect(202);
    let mut resumed = Sse::open(app, &path, &tenant.staff_key, Some(&first_id)).await;
    let (_, kind, missed) = resumed.next().await;
    assert_eq!((kind.as_str(), missed["space"]["status"].as_str()), ("space", Some("free")));
    // An id this server never issued (another node's, or from before a restart): a snapshot.
    let mut fresh = Sse::open(app, &path, &tenant.staff_key, Some("0badf00d.3")).await;
    assert_eq!(fresh.next().await.1, "snapshot");

    // A bounding box of sites: the snapshot lists each site, changes name their site.
    let area = "/v1/availability/stream?bbox=-8.70,41.10,-8.50,41.20";
    let mut stream = Sse::open(app, area, &tenant.staff_key, None).await;
    let (_, kind, snapshot) = stream.next().await;
    assert_eq!(kind, "snapshot");
    let sites = snapshot["sites"].as_array().unwrap();
    assert_eq!((sites.len(), sites[0]["site_id"].as_str()), (1, Some(site_id.as_str())));
    app.post("/v1/ingest/uplinks", &tenant.integration_key, uplink("01", 3)).await.expect(202);
    let (_, kind, change) = stream.next().await;
    assert_eq!((kind.as_str(), change["space"]["site_id"].as_str()), ("space", Some(site_id.as_str())));
    // Elsewhere: nothing in the box.
    let mut empty = Sse::open(app, "/v1/availability/stream?bbox=2.2,48.8,2.4,48.9", &tenant.staff_key, None).await;
    assert_eq!(empty.next().await.2["sites"], json!([]));
    let problem = app.get("/v1/availability/stream?bbox=1,2,3", &tenant.staff_key).await.problem(422);
    assert_eq!(problem["field"], "bbox");
    // Another tenant cannot listen in.
    let other = app.new_tenant("spy").await;
    app.get(&path, &other.staff_key).await.problem(404);
}

/// Behind a proxy that speaks HTTP/2 to the node (or a client with prior knowledge, h2c), many
/// streams share one connection: each gets its snapshot and every change, and plain requests
/// go over the same connection meanwhile.
async fn streams_share_an_http2_connection(app: &TestApp) {
    let tenant = app.new_tenant("h2c").await;
    let (site_id, spaces) = tenant.site_with_spaces(app, "Lot", 1).await;
    let device = json!({"external_id": BOSCH_EUI, "vendor": "bosch", "model": "tps110", "space_id": spaces[0]});
    app.post("/v1/devices", &tenant.admin_key, device).await.expect(201);
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let path = format!("/v1/sites/{site_id}/availability/stream");
    let mut streams = Vec::new();
    for _ in 0..5 {
        let (mut stream, version) = Sse::open_with(&h2, app, &path, &tenant.staff_key, None).await;
        assert_eq!(version, reqwest::Version::HTTP_2);
        assert_eq!(stream.next().await.1, "snapshot");
        streams.push(stream);
    }
    let availability = h2
        .get(format!("{}/v1/sites/{site_id}/availability", app.base_url))
        .bearer_auth(&tenant.staff_key)
        .send()
        .await
        .unwrap();
    assert_eq!((availability.status(), availability.version()), (reqwest::StatusCode::OK, reqwest::Version::HTTP_2));
    let uplink = json!({"device": BOSCH_EUI, "f_port": 1, "payload_hex": "01", "counter": 1, "time": chrono::Utc::now().to_rfc3339()});
    app.post("/v1/ingest/uplinks", &tenant.integration_key, uplink).await.expect(202);
    for stream in &mut streams {
        let (_, kind, change) = stream.next().await;
        assert_eq!((kind.as_str(), change["space"]["status"].as_str()), ("space", Some("occupied")));
    }
    // A stream closed by its client leaves the others, and the connection, as they were.
    streams.truncate(1);
    let uplink = json!({"device": BOSCH_EUI, "f_port": 1, "payload_hex": "00", "counter": 2, "time": chrono::Utc::now().to_rfc3339()});
    app.post("/v1/ingest/uplinks", &tenant.integration_key, uplink).await.expect(202);
    assert_eq!(streams[0].next().await.2["space"]["status"], "free");
    let (mut again, version) = Sse::open_with(&h2, app, &path, &tenant.staff_key, None).await;
    assert_eq!((version, again.next().await.1.as_str()), (reqwest::Version::HTTP_2, "snapshot"));
}

/// A crowd of clients connecting to a site at once (every client of a node reconnecting after
/// a restart) shares one snapshot query: each waits for the query in progress and takes its
/// result, which is as recent as its own would have been.
async fn a_crowd_connecting_at_once_shares_one_snapshot(app: &TestApp) {
    let tenant = app.new_tenant("crowd").await;
    let (site_id, _) = tenant.site_with_spaces(app, "Lot", 40).await;
    let path = format!("/v1/sites/{site_id}/availability/stream");
    let crowd = (0..30).map(|_| async {
        let mut stream = Sse::open(app, &path, &tenant.staff_key, None).await;
        let (_, kind, snapshot) = stream.next().await;
        assert_eq!((kind.as_str(), &snapshot["snapshot"]["total"]), ("snapshot", &json!(40)));
        snapshot["snapshot"]["at"].as_str().unwrap().to_owned()
    });
    let taken: std::collections::BTreeSet<String> = futures_util::future::join_all(crowd).await.into_iter().collect();
    // One query; a second only if a late client came after the first had aged out (1 s).
    assert!(taken.len() <= 2, "30 clients caused {} snapshot queries: {taken:?}", taken.len());
}

/// Moving a sensor to another space takes effect at once, even right after it was heard (the
/// ingest path caches device lookups and live state).
async fn a_moved_sensor_drives_its_new_space(app: &TestApp) {
    let tenant = app.new_tenant("moved").await;
    let (site_id, spaces) = tenant.site_with_spaces(app, "Lot", 2).await;
    let device = json!({"external_id": BOSCH_EUI, "vendor": "bosch", "model": "tps110", "space_id": spaces[0]});
    let device_id =
        app.post("/v1/devices", &tenant.admin_key, device).await.expect(201)["id"].as_str().unwrap().to_owned();
    let uplink = |payload: &str, counter: u32| json!({"device": BOSCH_EUI, "f_port": 1, "payload_hex": payload, "counter": counter, "time": chrono::Utc::now().to_rfc3339()});
    let key = &tenant.integration_key;
    assert_eq!(app.post("/v1/ingest/uplinks", key, uplink("01", 1)).await.expect(202)["space_id"], spaces[0].as_str());
    app.put(&format!("/v1/devices/{device_id}/space"), &tenant.admin_key, json!({"space_id": null})).await.expect(200);
    assert_eq!(app.post("/v1/ingest/uplinks", key, uplink("00", 2)).await.expect(202)["result"], "unbound");
    app.put(&format!("/v1/devices/{device_id}/space"), &tenant.admin_key, json!({"space_id": spaces[1]}))
        .await
        .expect(200);
    let taken = app.post("/v1/ingest/uplinks", key, uplink("01", 3)).await.expect(202);
    assert_eq!((taken["space_id"].as_str(), taken["status"].as_str()), (Some(spaces[1].as_str()), Some("occupied")));
    let availability = app.get(&format!("/v1/sites/{site_id}/availability"), &tenant.staff_key).await.expect(200);
    assert_eq!(count(&availability, "occupied"), 2, "the first space keeps its last reading");
    // A deleted device is unknown at once.
    app.delete(&format!("/v1/devices/{device_id}"), &tenant.admin_key).await.expect(204);
    let problem = app.post("/v1/ingest/uplinks", key, uplink("00", 4)).await.problem(422);
    assert_eq!(problem["field"], "device");
}

/// A commit that fails (here a trigger refuses one space's history row) stores nothing of its
/// uplink: the client gets 503, the space keeps its stored state, nothing is published, and the
/// state this node had computed for it is not trusted afterwards, so the same reading, sent
/// again once the database takes it, is a change with its history row.
async fn a_failed_commit_leaves_no_trace(app: &TestApp) {
    let tenant = app.new_tenant("faro").await;
    let (site_id, spaces) = tenant.site_with_spaces(app, "Garage", 2).await;
    let (failing, healthy) = ("0000000000000A01", "0000000000000B01");
    for (eui, space) in [(failing, &spaces[0]), (healthy, &spaces[1])] {
        let device = json!({"external_id": eui, "vendor": "bosch", "model": "tps110", "space_id": space});
        app.post("/v1/devices", &tenant.admin_key, device).await.expect(201);
    }
    let key = &tenant.integration_key;
    let uplink = |eui: &str, hex: &str, counter: u32| json!({"device": eui, "f_port": 1, "payload_hex": hex, "counter": counter});
    for eui in [failing, healthy] {
        let taken = app.post("/v1/ingest/uplinks", key, uplink(eui, "01", 1)).await.expect(202);
        assert_eq!((taken["result"].as_str(), taken["status"].as_str()), (Some("changed"), Some("occupied")));
    }

    let refuse = format!("(SELECT space_id FROM devices WHERE external_id = '{failing}')");
    if app.config.database_url().starts_with("sqlite") {
        // SQLite's writer appends history to `space_events_recent` (moved into `space_events`
        // about once a second).
        app.execute_sql(&format!(
            "CREATE TRIGGER refuse_history BEFORE INSERT ON space_events_recent WHEN NEW.space_id = {refuse} \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        ))
        .await;
    } else {
        app.execute_sql(&format!(
            "CREATE FUNCTION refuse_history() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.space_id = {refuse} THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$; \
             CREATE TRIGGER refuse_history BEFORE INSERT ON space_events FOR EACH ROW EXECUTE FUNCTION refuse_history()"
        ))
        .await;
    }
    let problem = app.post("/v1/ingest/uplinks", key, uplink(failing, "00", 2)).await.problem(503);
    assert!(problem["detail"].as_str().unwrap().contains("retry"), "{problem}");
    // The other space goes on working meanwhile.
    let taken = app.post("/v1/ingest/uplinks", key, uplink(healthy, "00", 2)).await.expect(202);
    assert_eq!((taken["result"].as_str(), taken["status"].as_str()), (Some("changed"), Some("free")));
    let space = app.get(&format!("/v1/spaces/{}", spaces[0]), &tenant.staff_key).await.expect(200);
    assert_eq!(space["status"], "occupied", "{space}");
    let availability = app.get(&format!("/v1/sites/{site_id}/availability"), &tenant.staff_key).await.expect(200);
    assert_eq!((count(&availability, "occupied"), count(&availability, "free")), (1, 1));

    // Once the database takes it again, the same reading is a change, with its history row.
    if app.config.database_url().starts_with("sqlite") {
        app.execute_sql("DROP TRIGGER refuse_history").await;
    } else {
        app.execute_sql("DROP TRIGGER refuse_history ON space_events; DROP FUNCTION refuse_history()").await;
    }
    let taken = app.post("/v1/ingest/uplinks", key, uplink(failing, "00", 2)).await.expect(202);
    assert_eq!((taken["result"].as_str(), taken["status"].as_str()), (Some("changed"), Some("free")), "{taken}");
    let history = app.get(&format!("/v1/spaces/{}/history", spaces[0]), &tenant.staff_key).await.expect(200);
    let changes: Vec<&str> =
        history["items"].as_array().unwrap().iter().map(|event| event["to"].as_str().unwrap()).collect();
    assert_eq!(changes, ["free", "occupied"], "{history}");
}

/// On SQLite the ingest writer appends history rows to `space_events_recent`, which has no
/// per-space index, and moves them into `space_events` about once a second: a space's history
/// and a site's events read the same whichever table holds them, also through another node's
/// store, and a deleted space takes its rows from both.
async fn history_reads_the_same_before_and_after_a_move(app: &TestApp) {
    use berth_kernel::ports::LiveStore;
    let tenant = app.new_tenant("evora").await;
    let (_, spaces) = tenant.site_with_spaces(app, "Garage", 1).await;
    let device = json!({"external_id": BOSCH_EUI, "vendor": "bosch", "model": "tps110", "space_id": spaces[0]});
    app.post("/v1/devices", &tenant.admin_key, device).await.expect(201);
    let key = &tenant.integration_key;
    let start = chrono::Utc::now();
    let uplink =
        |hex: &str, counter: u32| json!({"device": BOSCH_EUI, "f_port": 1, "payload_hex": hex, "counter": counter});
    app.post("/v1/ingest/uplinks", key, uplink("01", 1)).await.expect(202);
    app.post("/v1/ingest/uplinks", key, uplink("00", 2)).await.expect(202);
    // Every second a round of moves starts, in which each slice of the spaces moves after the
    // first commit from its share of the second on: heartbeats commit until this space's slice
    // has moved.
    let space = &spaces[0];
    let count = |table: &str| {
        format!(
            "SELECT COUNT(*) FROM {table} WHERE space_id = (SELECT space_id FROM devices WHERE external_id = '{BOSCH_EUI}')"
        )
    };
    let mut counter = 3;
    while app.query_i64(&count("space_events")).await < 2 && counter < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let taken = app.post("/v1/ingest/uplinks", key, uplink("00", counter)).await.expect(202);
        assert_eq!(taken["result"], "refreshed");
        counter += 1;
    }
    app.post("/v1/ingest/uplinks", key, uplink("01", counter)).await.expect(202);

    // A move runs after its commit is answered and may be under way: both counts in one query.
    let both = format!("SELECT ({}) * 1000 + ({})", count("space_events"), count("space_events_recent"));
    let both = app.query_i64(&both).await;
    let (moved, recent) = (both / 1000, both % 1000);
    assert_eq!(moved + recent, 3);
    if app.config.database_url().starts_with("sqlite") {
        // The third normally waits for the next round; on a slow machine it may have moved.
        assert!(moved >= 2, "moved {moved}, recent {recent}");
    } else {
        assert_eq!(recent, 0, "PostgreSQL writes history straight into space_events");
    }
    let history = app.get(&format!("/v1/spaces/{space}/history"), &tenant.staff_key).await.expect(200);
    let changes: Vec<&str> =
        history["items"].as_array().unwrap().iter().map(|event| event["to"].as_str().unwrap()).collect();
    assert_eq!(changes, ["occupied", "free", "occupied"], "{history}");

    let settings = berth_storage::DatabaseSettings {
        url: app.config.database_url(),
        max_connections: 2,
        connect_timeout: std::time::Duration::from_secs(10),
    };
    let other = berth_storage::SqlStore::connect(&settings).await.unwrap();
    let operator = berth_kernel::ids::OperatorId::parse(&tenant.operator_id).unwrap();
    let space_id = berth_kernel::ids::SpaceId::parse(space).unwrap();
    let newest_two = other.list_space_events(operator, space_id, 2).await.unwrap();
    let to: Vec<_> = newest_two.iter().map(|event| event.to).collect();
    use berth_kernel::space::SpaceStatus::{Free, Occupied};
    assert_eq!(to, [Occupied, Free]);
    let lowest = berth_kernel::live::SpaceEvent::lowest_id_from(start);
    let end = chrono::Utc::now() + chrono::Duration::seconds(1);
    let between = other.list_events_between(operator, &[space_id], lowest, start, end, 100).await.unwrap();
    let to: Vec<_> = between.iter().map(|event| event.to).collect();
    assert_eq!(to, [Occupied, Free, Occupied]);
    // Another tenant sees none of them.
    let stranger = app.new_tenant("elvas").await;
    let stranger = berth_kernel::ids::OperatorId::parse(&stranger.operator_id).unwrap();
    assert!(other.list_space_events(stranger, space_id, 10).await.unwrap().is_empty());
    assert!(other.list_events_between(stranger, &[space_id], lowest, start, end, 100).await.unwrap().is_empty());

    app.delete(&format!("/v1/spaces/{space}"), &tenant.admin_key).await.expect(204);
    let everywhere = "SELECT (SELECT COUNT(*) FROM space_events) + (SELECT COUNT(*) FROM space_events_recent)";
    assert_eq!(app.query_i64(everywhere).await, 0);
    other.close().await.unwrap();
}

/// Batches apply in the order their turns were taken, not the order they finish decoding: a
/// batch with a sensor's newer reading, ready first, waits for the batch with its older one, so
/// both are changes with their history rows (rather than the older one coming "out of order").
/// A turn dropped unused lets the next batch go.
async fn batches_apply_in_the_order_they_came(app: &TestApp) {
    use berth_kernel::ingest::{IngestResult, UplinkInput};
    let tenant = app.new_tenant("braga").await;
    let (_, spaces) = tenant.site_with_spaces(app, "Garage", 1).await;
    let device = json!({"external_id": BOSCH_EUI, "vendor": "bosch", "model": "tps110", "space_id": spaces[0]});
    app.post("/v1/devices", &tenant.admin_key, device).await.expect(201);
    let operator = berth_kernel::ids::OperatorId::parse(&tenant.operator_id).unwrap();
    let now = chrono::Utc::now();
    let reading = |hex: u8, counter: u32, seconds_ago: i64| {
        let input = UplinkInput {
            device_key: BOSCH_EUI.into(),
            f_port: 1,
            payload: vec![hex],
            counter: Some(counter),
            event_time: Some(now - chrono::Duration::seconds(seconds_ago)),
        };
        vec![(operator, input)]
    };
    let kernel = app.kernel().clone();
    let (first, second) = (kernel.ingest_turn(), kernel.ingest_turn());
    let later = tokio::spawn({
        let (kernel, batch) = (kernel.clone(), reading(0, 2, 10));
        async move { kernel.ingest_many_in_turn(second, batch).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!later.is_finished(), "the later batch waits for the earlier one's turn");
    let earlier = kernel.ingest_many_in_turn(first, reading(1, 1, 20)).await;
    let later = later.await.unwrap();
    assert_eq!(earlier[0].as_ref().unwrap().result, IngestResult::Changed);
    assert_eq!(later[0].as_ref().unwrap().result, IngestResult::Changed);
    let history = app.get(&format!("/v1/spaces/{}/history", spaces[0]), &tenant.staff_key).await.expect(200);
    let changes: Vec<&str> =
        history["items"].as_array().unwrap().iter().map(|event| event["to"].as_str().unwrap()).collect();
    assert_eq!(changes, ["free", "occupied"], "{history}");

    let (unused, next) = (kernel.ingest_turn(), kernel.ingest_turn());
    drop(unused);
    let answered =
        tokio::time::timeout(std::time::Duration::from_secs(10), kernel.ingest_many_in_turn(next, reading(1, 3, 5)))
            .await
            .expect("a dropped turn lets the next batch go");
    assert_eq!(answered[0].as_ref().unwrap().result, IngestResult::Changed);
}

/// A batch looks its devices up together: after a restart (cold caches) one batch holds a known
/// sensor twice, an unbound one, an id nobody registered and another operator's id; each gets its
/// own answer, and the sensor's health goes on from what was stored before the restart.
async fn a_batch_looks_its_devices_up_together(app: &mut TestApp) {
    use berth_kernel::ingest::{IngestResult, UplinkInput};
    let tenant = app.new_tenant("coimbra").await;
    let other = app.new_tenant("vigo").await;
    let (_, spaces) = tenant.site_with_spaces(app, "Garage", 1).await;
    let bound = json!({"external_id": BOSCH_EUI, "vendor": "bosch", "model": "tps110", "space_id": spaces[0]});
    let device = app.post("/v1/devices", &tenant.admin_key, bound).await.expect(201);
    let unbound = json!({"external_id": "70B3D57ED0000002", "vendor": "bosch", "model": "tps110"});
    app.post("/v1/devices", &tenant.admin_key, unbound).await.expect(201);
    let theirs = json!({"external_id": "70B3D57ED0000003", "vendor": "bosch", "model": "tps110"});
    app.post("/v1/devices", &other.admin_key, theirs).await.expect(201);
    let operator = berth_kernel::ids::OperatorId::parse(&tenant.operator_id).unwrap();
    let reading = |device: &str, occupied: u8, counter: u32| {
        let input = UplinkInput {
            device_key: device.into(),
            f_port: 1,
            payload: vec![occupied],
            counter: Some(counter),
            event_time: None,
        };
        (operator, input)
    };
    let first = app.kernel().ingest_many(vec![reading(BOSCH_EUI, 1, 1)]).await;
    assert_eq!(first[0].as_ref().unwrap().result, IngestResult::Changed);

    app.restart().await;
    let batch = vec![
        reading(BOSCH_EUI, 0, 2),
        reading("70B3D57ED00000FF", 1, 1),
        reading("70B3D57ED0000002", 1, 1),
        reading("70B3D57ED0000003", 1, 1),
        reading(BOSCH_EUI, 1, 3),
    ];
    let answers = app.kernel().ingest_many(batch).await;
    let results: Vec<Result<IngestResult, String>> = answers
        .iter()
        .map(|answer| answer.as_ref().map(|report| report.result).map_err(|error| error.to_string()))
        .collect();
    assert_eq!(results[0], Ok(IngestResult::Changed));
    assert!(results[1].as_ref().unwrap_err().contains("no device with external_id '70B3D57ED00000FF'"), "{results:?}");
    assert_eq!(results[2], Ok(IngestResult::Unbound));
    assert!(results[3].as_ref().unwrap_err().contains("no device with external_id '70B3D57ED0000003'"), "{results:?}");
    assert_eq!(results[4], Ok(IngestResult::Changed));
    assert_eq!(answers[4].as_ref().unwrap().space_id.map(|space| space.to_string()), Some(spaces[0].clone()));
    let device_id = device["id"].as_str().unwrap();
    let health = app.get(&format!("/v1/devices/{device_id}/health"), &tenant.staff_key).await.expect(200);
    assert_eq!(health["accepted"], 3, "one stored before the restart, two after: {health}");
}

crate::on_each_backend!(
    a_batch_looks_its_devices_up_together,
    batches_apply_in_the_order_they_came,
    a_failed_commit_leaves_no_trace,
    history_reads_the_same_before_and_after_a_move,
    a_moved_sensor_drives_its_new_space,
    uplinks_drive_the_space,
    bad_uplinks_are_refused_with_reasons,
    availability_streams_and_resumes,
    streams_share_an_http2_connection,
    a_crowd_connecting_at_once_shares_one_snapshot
);
