//! Data survives restarts: a graceful stop and, for the real binary, `kill -9`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::helpers::{ADMIN_KEY, Backend, TestApp, postgres_url};

async fn survives_graceful_restart(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let tenant = app.new_tenant("acme").await;
    let (site_id, space_ids) = tenant.site_with_spaces(&app, "Lot", 20).await;
    let driver = app.new_driver("ana@example.com").await;
    app.post("/v1/drivers/me/vehicles", &driver, json!({"plate": "AA11BB"})).await.expect(201);

    app.restart().await;

    let spaces = app.get(&format!("/v1/sites/{site_id}/spaces"), &tenant.admin_key).await.expect(200);
    let ids: Vec<&str> = spaces["items"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, space_ids.iter().map(String::as_str).collect::<Vec<_>>());
    // Keys and driver tokens (signed with the persisted secret) still work.
    let vehicles = app.get("/v1/drivers/me/vehicles", &driver).await.expect(200);
    assert_eq!(vehicles["items"][0]["plate"], "AA11BB");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_restart_sqlite() {
    survives_graceful_restart(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_restart_postgres() {
    if postgres_url().is_none() {
        eprintln!("BERTH_TEST_POSTGRES_URL not set: PostgreSQL run skipped");
        return;
    }
    survives_graceful_restart(Backend::Postgres).await;
}

/// Starts `berth serve` as a child process and returns it with its base URL.
fn spawn_binary(data_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("serve")
        .env("BERTH__DATA_DIR", data_dir)
        .env("BERTH__HTTP__LISTEN", "127.0.0.1:0")
        .env("BERTH__AUTH__ADMIN_KEY", ADMIN_KEY)
        .env("RUST_LOG", "warn")
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
