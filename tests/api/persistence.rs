//! Data survives restarts: a graceful stop and, for the real binary, `kill -9`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::helpers::{ADMIN_KEY, TestApp};

async fn survives_graceful_restart(app: &mut TestApp) {
    let tenant = app.new_tenant("acme").await;
    let (site_id, space_ids) = tenant.site_with_spaces(app, "Lot", 20).await;
    let driver = app.new_driver("ana@example.com").await;
    app.post("/v1/drivers/me/vehicles", &driver, json!({"plate": "AA11BB"})).await.expect(201);

    app.restart().await;

    let spaces = app.get(&format!("/v1/sites/{site_id}/spaces"), &tenant.admin_key).await.expect(200);
    let ids: Vec<&str> = spaces["items"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, space_ids.iter().map(String::as_str).collect::<Vec<_>>());
    // Keys and driver tokens (signed with the persisted secret) still work.
    let vehicles = app.get("/v1/drivers/me/vehicles", &driver).await.expect(200);
    assert_eq!(vehicles["items"][0]["plate"], "AA11BB");
}

crate::on_each_backend!(survives_graceful_restart);

/// Starts `berth serve` as a child process and returns it with its base URL.
pub fn spawn_binary(data_dir: &std::path::Path) -> (Child, String) {
    spawn_binary_with(data_dir, &[])
}

/// [`spawn_binary`] with more environment (configuration) variables.
pub fn spawn_binary_with(data_dir: &std::path::Path, env: &[(&str, String)]) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command.arg("serve");
    spawn_serve(command, data_dir, env)
}

/// `berth serve` started by a shell that first runs `setup` (`ulimit …`), then `exec`s it.
pub fn spawn_binary_after(setup: &str, data_dir: &std::path::Path) -> (Child, String) {
    let mut command = Command::new("sh");
    command.args(["-c", &format!("{setup} && exec \"$0\" serve"), env!("CARGO_BIN_EXE_berth")]);
    spawn_serve(command, data_dir, &[])
}

/// Runs `command` (which starts `berth serve`) on `data_dir` with the test configuration, and
/// waits for its banner.
fn spawn_serve(mut command: Command, data_dir: &std::path::Path, env: &[(&str, String)]) -> (Child, String) {
    let mut child = command
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .env("BERTH__DATA_DIR", data_dir)
        .env("BERTH__HTTP__LISTEN", "127.0.0.1:0")
        // The embedded broker on any free port (1883 may be another broker's).
        .env("BERTH__MQTT__LISTEN", "127.0.0.1:0")
        .env("BERTH__AUTH__ADMIN_KEY", ADMIN_KEY)
        .env("RUST_LOG", "warn")
        .env("BERTH__PLUGINS__CACHE_DIR", std::env::temp_dir().join("berth-test-plugin-cache"))
        .env("BERTH__PLUGINS__WATCH", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn berth");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read banner");
    let addr =
        line.split("http://").nth(1).and_then(|rest| rest.split_whitespace().next()).expect("banner with address");
    (child, format!("http://{addr}"))
}

/// An acknowledged write is on disk: `kill -9` right after the 201 loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let data_dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let (mut child, base) = spawn_binary(data_dir.path());
    let operator: serde_json::Value = client
        .post(format!("{base}/v1/operators"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "Acme", "slug": "acme"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut created_ids = Vec::new();
    for idx in 0..20 {
        let response = client
            .post(format!("{base}/v1/operators"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"name": format!("Op {idx}"), "slug": format!("op-{idx}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        created_ids.push(response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let (mut child, base) = spawn_binary(data_dir.path());
    let listed: serde_json::Value = client
        .get(format!("{base}/v1/operators?limit=100"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed_ids: Vec<&str> =
        listed["items"].as_array().unwrap().iter().map(|op| op["id"].as_str().unwrap()).collect();
    assert_eq!(listed_ids.len(), 21);
    assert_eq!(listed_ids[0], operator["id"].as_str().unwrap());
    for id in &created_ids {
        assert!(listed_ids.contains(&id.as_str()), "operator {id} was acknowledged but lost");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// SIGTERM stops accepting but lets an in-flight request finish: the server has begun reading
/// the body (it answered `100 Continue`) when the signal arrives, the rest of the body follows,
/// and the request still completes and persists. Then the process exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let data_dir = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn_binary(data_dir.path());
    let client = reqwest::Client::new();
    let create = |slug: &str| {
        client.post(format!("{base}/v1/operators")).bearer_auth(ADMIN_KEY).json(&json!({"name": slug, "slug": slug}))
    };
    assert_eq!(create("before").send().await.unwrap().status(), 201);

    let body = json!({"name": "In flight", "slug": "in-flight"}).to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /v1/operators HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buffer = vec![0u8; 4096];
    let n = stream.read(&mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 100"), "server did not start reading the body");
    stream.write_all(head.as_bytes()).await.unwrap();

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());

    stream.write_all(tail.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "in-flight request was not completed: {response}");
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(exit.success(), "berth exited with {exit}");

    // New connections are refused once stopped; after a restart both operators are there.
    assert!(create("after").send().await.is_err());
    let (mut child, base) = spawn_binary(data_dir.path());
    let listed: serde_json::Value =
        client.get(format!("{base}/v1/operators")).bearer_auth(ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    let slugs: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|op| op["slug"].as_str().unwrap()).collect();
    assert_eq!(slugs, ["before", "in-flight"]);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Live state is rebuilt from the database after `kill -9`: every acknowledged uplink's effect
/// and history entry is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_state_survives_kill_9() {
    let data_dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let call = |base: String, method: reqwest::Method, path: String, token: String, body: Option<serde_json::Value>| {
        let client = client.clone();
        async move {
            let mut request = client.request(method, format!("{base}{path}")).bearer_auth(token);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    use reqwest::Method;
    let (mut child, base) = spawn_binary(data_dir.path());
    let (_, operator) = call(
        base.clone(),
        Method::POST,
        "/v1/operators".into(),
        ADMIN_KEY.into(),
        Some(json!({"name": "Acme", "slug": "acme"})),
    )
    .await;
    let keys = format!("/v1/operators/{}/keys", operator["id"].as_str().unwrap());
    let (_, admin) = call(
        base.clone(),
        Method::POST,
        keys.clone(),
        ADMIN_KEY.into(),
        Some(json!({"name": "a", "kind": "operator", "role": "operator_admin"})),
    )
    .await;
    let admin = admin["token"].as_str().unwrap().to_owned();
    let (_, site) =
        call(base.clone(), Method::POST, "/v1/sites".into(), admin.clone(), Some(crate::helpers::porto_site("Lot")))
            .await;
    let site_id = site["id"].as_str().unwrap().to_owned();
    let (_, space) = call(
        base.clone(),
        Method::POST,
        format!("/v1/sites/{site_id}/spaces"),
        admin.clone(),
        Some(json!({"code": "A1"})),
    )
    .await;
    let space_id = space["id"].as_str().unwrap().to_owned();
    let device = json!({"external_id": "1000000000000001", "vendor": "bosch", "model": "tps110", "space_id": space_id});
    let (status, _) = call(base.clone(), Method::POST, "/v1/devices".into(), admin.clone(), Some(device)).await;
    assert_eq!(status, 201);
    let start = chrono::Utc::now() - chrono::Duration::minutes(30);
    for counter in 0..9u32 {
        let uplink = json!({"device": "1000000000000001", "f_port": 1, "payload_hex": format!("0{}", counter % 2),
            "counter": counter, "time": (start + chrono::Duration::minutes(i64::from(counter) * 3)).to_rfc3339()});
        let (status, taken) =
            call(base.clone(), Method::POST, "/v1/ingest/uplinks".into(), admin.clone(), Some(uplink)).await;
        assert_eq!((status, taken["result"].as_str()), (202, Some("changed")), "{taken}");
    }
    child.kill().unwrap(); // SIGKILL, right after the last 202
    child.wait().unwrap();

    let (mut child, base) = spawn_binary(data_dir.path());
    let (_, availability) =
        call(base.clone(), Method::GET, format!("/v1/sites/{site_id}/availability"), admin.clone(), None).await;
    assert_eq!(availability["by_status"]["free"], 1, "{availability}");
    let (_, history) =
        call(base.clone(), Method::GET, format!("/v1/spaces/{space_id}/history"), admin.clone(), None).await;
    assert_eq!(history["items"].as_array().unwrap().len(), 9);
    // The dedup state survived too: the last uplink again is a duplicate.
    let again = json!({"device": "1000000000000001", "f_port": 1, "payload_hex": "00", "counter": 8,
        "time": (start + chrono::Duration::minutes(24)).to_rfc3339()});
    let (_, taken) = call(base, Method::POST, "/v1/ingest/uplinks".into(), admin, Some(again)).await;
    assert_eq!(taken["result"], "duplicate");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `kill -9` while a booking's authorization is in flight at the provider: after the restart
/// the booking is there, the call is repeated with the same idempotency key once its lease
/// runs out, and the provider holds exactly one payment for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_in_flight_survives_kill_9() {
    use berth_payments::fake::stripe::{Failure, FakeStripe, FakeStripeConfig};

    let stripe = FakeStripe::start(FakeStripeConfig::new("sk_test_kill9", "whsec_kill9")).await.unwrap();
    // The first authorization is carried out but its answer never comes back in time.
    stripe.fail_next(1, Failure::Timeout(std::time::Duration::from_secs(120)));
    let env = [
        ("BERTH__PAYMENTS__PROVIDERS", "[\"stripe\"]".to_owned()),
        ("BERTH__PAYMENTS__STRIPE__SECRET_KEY", "sk_test_kill9".to_owned()),
        ("BERTH__PAYMENTS__STRIPE__BASE_URL", stripe.base_url()),
        ("BERTH__PAYMENTS__STRIPE__TIMEOUT_SECS", "60".to_owned()),
        ("BERTH__PAYMENTS__LEASE_SECS", "2".to_owned()),
        ("BERTH__PAYMENTS__RETRY_BASE_MS", "50".to_owned()),
        ("BERTH__PAYMENTS__RELAY_INTERVAL_MS", "100".to_owned()),
    ];
    let data_dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let (mut child, base) = spawn_binary_with(data_dir.path(), &env);
    let post = |base: &str, path: &str, token: &str, body: serde_json::Value| {
        let request = client.post(format!("{base}{path}")).json(&body);
        if token.is_empty() { request } else { request.bearer_auth(token.to_owned()) }.send()
    };
    let json = |response: reqwest::Response| async move { response.json::<serde_json::Value>().await.unwrap() };
    let operator =
        json(post(&base, "/v1/operators", ADMIN_KEY, json!({"name": "Acme", "slug": "acme"})).await.unwrap()).await;
    let keys = format!("/v1/operators/{}/keys", operator["id"].as_str().unwrap());
    let key = json!({"name": "a", "kind": "operator", "role": "operator_admin"});
    let admin = json(post(&base, &keys, ADMIN_KEY, key).await.unwrap()).await["token"].as_str().unwrap().to_owned();
    let site = json(post(&base, "/v1/sites", &admin, crate::helpers::porto_site("Lot")).await.unwrap()).await;
    let site_id = site["id"].as_str().unwrap().to_owned();
    post(&base, &format!("/v1/sites/{site_id}/spaces"), &admin, json!({"code": "A1"})).await.unwrap();
    let set = json(
        post(&base, "/v1/rulesets", &admin, json!({"name": "t", "site_id": site_id, "currency": "EUR"})).await.unwrap(),
    )
    .await;
    let versions = format!("/v1/rulesets/{}/versions", set["id"].as_str().unwrap());
    let tests = json!([{"name": "h", "context": {"start": "2026-03-02T09:00", "end": "2026-03-02T10:00"}, "expect": {"total_minor": 300}}]);
    post(&base, &versions, &admin, json!({"source": "fn price(ctx) { 300 }", "tests": tests})).await.unwrap();
    let published = post(&base, &format!("{versions}/1/publish"), &admin, json!({})).await.unwrap();
    assert_eq!(published.status(), 200);
    let credentials = json!({"email": "ana@example.com", "password": "correct horse battery staple"});
    post(&base, "/v1/drivers", "", credentials.clone()).await.unwrap();
    let driver = json(post(&base, "/v1/drivers/login", "", credentials).await.unwrap()).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let start = chrono::Utc::now() + chrono::Duration::days(1);
    let window = json!({"site_id": site_id, "start": start.to_rfc3339(), "end": (start + chrono::Duration::hours(1)).to_rfc3339()});
    let quote = json(post(&base, "/v1/quotes", &driver, window).await.unwrap()).await;
    assert!(quote["id"].is_string(), "{quote}");

    // The booking request waits on the provider; kill the server while it does.
    let body = json!({"quote_id": quote["id"], "payment_method": "pm_card_visa"});
    let booking = tokio::spawn(post(&base, "/v1/bookings", &driver, body));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while stripe.payment_intents().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the authorization never reached the provider");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL, with the provider call in flight
    child.wait().unwrap();
    assert!(booking.await.unwrap().is_err(), "the driver got no answer");

    let (mut child, base) = spawn_binary_with(data_dir.path(), &env);
    let get = |path: String| client.get(format!("{base}{path}")).bearer_auth(driver.clone()).send();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let confirmed = loop {
        let listed = json(get("/v1/bookings".into()).await.unwrap()).await;
        let items = listed["items"].as_array().unwrap().clone();
        assert_eq!(items.len(), 1, "the booking was committed with its outbox entry: {listed}");
        if items[0]["status"] == "confirmed" {
            break items[0].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "the authorization was never repeated: {listed}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let booking = json(get(format!("/v1/bookings/{}", confirmed["id"].as_str().unwrap())).await.unwrap()).await;
    assert_eq!(booking["payments"][0]["status"], "authorized", "{booking}");
    // The repeat carried the same key: one PaymentIntent, no double hold.
    assert_eq!(stripe.payment_intents().len(), 1);
    child.kill().unwrap();
    child.wait().unwrap();
}
