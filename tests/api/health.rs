//! Liveness, readiness and Prometheus metrics.

use crate::helpers::{ADMIN_KEY, TestApp};
use crate::on_each_backend;

on_each_backend!(health_readiness_and_metrics);

async fn health_readiness_and_metrics(app: &TestApp) {
    let client = &app.client;
    let healthz = client.get(format!("{}/healthz", app.base_url)).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    let readyz = client.get(format!("{}/readyz", app.base_url)).send().await.unwrap();
    assert_eq!(readyz.status(), 200);

    app.get("/v1/operators", ADMIN_KEY).await.expect(200);
    let metrics = client.get(format!("{}/metrics", app.base_url)).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.lines().any(|line| line.starts_with("berth_http_requests_total{")
            && line.contains("route=\"listOperators\"")
            && line.contains("status=\"200\"")),
        "no per-route counter in:\n{metrics}"
    );
    assert!(
        metrics.contains("berth_http_request_duration_seconds_bucket{") && metrics.contains("route=\"listOperators\""),
        "no latency histogram in:\n{metrics}"
    );
}
