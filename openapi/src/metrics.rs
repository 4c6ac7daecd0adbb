//! Prometheus metrics: request counts and latency histograms per route.
//!
//! The route label is the operation id of the matched operation (bounded set), the literal path
//! of the few plain endpoints, or `unmatched`: never the raw URL, which would explode cardinality.

use std::sync::OnceLock;
use std::time::Instant;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use poem_openapi::OperationId;

const LATENCY_BUCKETS_SECS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Installs the process-wide recorder once and returns its handle (tests start many servers in
/// one process; they share the recorder).
pub fn prometheus_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECS)
                .expect("invariant: bucket list is non-empty")
                .install_recorder()
                .expect("invariant: no other metrics recorder is installed in this process")
        })
        .clone()
}

pub struct RequestMetrics;

impl<E: Endpoint> Middleware<E> for RequestMetrics {
    type Output = RequestMetricsEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        RequestMetricsEndpoint { inner: ep }
    }
}

pub struct RequestMetricsEndpoint<E> {
    inner: E,
}

const PLAIN_ROUTES: &[&str] = &["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"];

impl<E: Endpoint> Endpoint for RequestMetricsEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Self::Output> {
        let started = Instant::now();
        let method = req.method().to_string();
        let plain_route = PLAIN_ROUTES.iter().find(|route| req.uri().path() == **route).copied();
        let result = self.inner.call(req).await.map(IntoResponse::into_response);
        let (status, operation) = match &result {
            Ok(response) => (response.status(), response.data::<OperationId>().map(|id| id.0)),
            Err(error) => (error.status(), error.data::<OperationId>().map(|id| id.0)),
        };
        let route = operation.or(plain_route).unwrap_or("unmatched");
        let labels = [("method", method), ("route", route.to_owned()), ("status", status.as_u16().to_string())];
        metrics::counter!("berth_http_requests_total", &labels).increment(1);
        metrics::histogram!("berth_http_request_duration_seconds", &labels[..2])
            .record(started.elapsed().as_secs_f64());
        result
    }
}
