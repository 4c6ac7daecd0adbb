//! Assembles the HTTP application: the OpenAPI service, docs, health, metrics and the
//! cross-cutting middleware (body limit, problem+json errors, request metrics, tracing).

use poem::http::StatusCode;
use poem::middleware::Tracing;
use poem::web::Data;
use poem::web::Path;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, handler};
use poem_openapi::OpenApiService;

use crate::api::bookings::BookingsApi;
use crate::api::chat::ChatApi;
use crate::api::devices::DevicesApi;
use crate::api::drivers::DriversApi;
use crate::api::handoffs::HandoffsApi;
use crate::api::keys::KeysApi;
use crate::api::live::LiveApi;
use crate::api::nlu::NluApi;
use crate::api::operators::OperatorsApi;
use crate::api::plugins::PluginsApi;
use crate::api::rules::RulesApi;
use crate::api::search::SearchApi;
use crate::api::sites::SitesApi;
use crate::api::spaces::SpacesApi;
use crate::metrics::{RequestMetrics, prometheus_handle};
use crate::problem::{Problem, error_to_problem};
use crate::state::AppState;

type Apis = (
    OperatorsApi,
    KeysApi,
    SitesApi,
    SpacesApi,
    DevicesApi,
    DriversApi,
    PluginsApi,
    LiveApi,
    RulesApi,
    SearchApi,
    BookingsApi,
    NluApi,
    ChatApi,
    HandoffsApi,
);

fn api_service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            OperatorsApi,
            KeysApi,
            SitesApi,
            SpacesApi,
            DevicesApi,
            DriversApi,
            PluginsApi,
            LiveApi,
            RulesApi,
            SearchApi,
            BookingsApi,
            NluApi,
            ChatApi,
            HandoffsApi,
        ),
        "berth",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "berth smart-parking platform API. Authenticate with `Authorization: Bearer <token>`: an API key \
         (platform admin, operator, integration) or a driver token. Errors are `application/problem+json`.",
    )
}

/// The OpenAPI document, as committed at `openapi/openapi.json`.
pub fn spec_json() -> String {
    api_service().spec()
}

/// The whole HTTP application.
pub fn app(state: AppState, max_body_bytes: usize) -> impl Endpoint<Output = Response> {
    // Install the recorder before the first request is counted.
    prometheus_handle();
    let service = api_service();
    let spec = service.spec_endpoint();
    let docs = service.swagger_ui();
    Route::new()
        .nest("/", service)
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .at("/v1/webhooks/payments/:provider", poem::post(payment_webhook))
        .at("/v1/webhooks/chat/:channel", poem::post(chat_webhook).get(chat_subscription))
        .at("/chat", get(chat_page))
        .at("/healthz", get(healthz))
        .at("/readyz", get(readyz))
        .at("/metrics", get(metrics))
        .around(move |ep, req| limit_body(ep, req, max_body_bytes))
        .data(state)
        .catch_all_error(error_to_problem)
        .with(RequestMetrics)
        .with(Tracing)
        .map_to_response()
}

/// Rejects bodies over the limit: by `Content-Length` up front, and by counting for chunked
/// bodies, so an oversized request is a 413 and never buffered whole.
async fn limit_body<E: Endpoint>(
    ep: std::sync::Arc<E>,
    mut req: Request,
    max_body_bytes: usize,
) -> poem::Result<Response> {
    let too_large =
        || poem::Error::from_string(format!("the limit is {max_body_bytes} bytes"), StatusCode::PAYLOAD_TOO_LARGE);
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_body_bytes as u64) {
        return Err(too_large());
    }
    // Buffer the (bounded) body: it is needed whole for parsing anyway, and kept for
    // explaining JSON type errors below.
    let body = req.take_body().into_bytes_limit(max_body_bytes).await.map_err(|_| too_large())?;
    let is_json = req.content_type().is_some_and(|content_type| content_type.contains("json"));
    req.set_body(body.clone());
    let result = ep.call(req).await.map(IntoResponse::into_response);
    match result {
        Err(mut error) if is_json && error.status() == StatusCode::BAD_REQUEST => {
            if let Some(field) = crate::problem::locate_json_type_error(&error.to_string(), &body) {
                error.set_data(crate::problem::FieldHint(field));
            }
            Err(error)
        }
        other => other,
    }
}

/// A bound TCP listener, ready to serve.
pub struct Listener {
    acceptor: PatientAcceptor<poem::listener::TcpAcceptor>,
    local_addr: std::net::SocketAddr,
}

/// The longest pause between accept attempts while the process has no file descriptor to spare.
const MAX_ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// An acceptor that waits out failures instead of returning them. poem's server ignores a failed
/// accept and calls again at once; out of file descriptors (`EMFILE`), the connection stays
/// queued and every call fails again, so the server would spin a core until one is freed. This
/// one retries a connection that broke before it was accepted straight away, and pauses after
/// any other failure, 5 ms doubling to [`MAX_ACCEPT_PAUSE`], warning once per run of failures.
pub struct PatientAcceptor<A> {
    inner: A,
}

impl<A> PatientAcceptor<A> {
    pub fn new(inner: A) -> Self {
        Self { inner }
    }
}

/// Failures of one connection (its client gave up before it was accepted), not of the listener.
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset)
}

impl<A: poem::listener::Acceptor> poem::listener::Acceptor for PatientAcceptor<A> {
    type Io = A::Io;

    fn local_addr(&self) -> Vec<poem::web::LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(
        &mut self,
    ) -> std::io::Result<(Self::Io, poem::web::LocalAddr, poem::web::RemoteAddr, poem::http::uri::Scheme)> {
        let mut pause = std::time::Duration::from_millis(5);
        let mut failures = 0u64;
        loop {
            match self.inner.accept().await {
                Ok(accepted) => {
                    if failures > 0 {
                        tracing::info!(failures, "accepting connections again");
                    }
                    return Ok(accepted);
                }
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(
                            %error,
                            "cannot accept connections (out of file descriptors? see the open-files limit at startup); \
                             pausing between attempts"
                        );
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_ACCEPT_PAUSE);
                }
            }
        }
    }
}

/// Connections the kernel may hold for the server before it accepts them (Linux caps it at
/// `net.core.somaxconn`, 4,096 by default). A node that restarts sees every live client
/// reconnect at once; past the backlog, connections are dropped or reset.
const LISTEN_BACKLOG: u32 = 4096;

/// Requests one HTTP/2 connection may have open at once (each SSE stream holds one). HTTP/2
/// comes over TLS from a proxy in front, or as cleartext with prior knowledge (h2c); a proxy
/// that multiplexes its clients' streams onto a few connections to the node needs room for
/// many. Browsers open at most about 100.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1000;

/// Binds `addr` now (port 0 picks a free port), so bind errors surface before serving.
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<Listener> {
    use poem::listener::Acceptor;
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As `TcpListener::bind` does: a restarted server can take its port back at once.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let acceptor = poem::listener::TcpAcceptor::from_tokio(socket.listen(LISTEN_BACKLOG)?)?;
    let local_addr = acceptor
        .local_addr()
        .first()
        .and_then(|addr| addr.as_socket_addr().copied())
        .ok_or_else(|| std::io::Error::other("listener has no socket address"))?;
    Ok(Listener { acceptor: PatientAcceptor::new(acceptor), local_addr })
}

impl Listener {
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then stops accepting and gives in-flight requests up
    /// to `grace` to finish.
    pub async fn serve(
        self,
        state: AppState,
        max_body_bytes: usize,
        shutdown: impl std::future::Future<Output = ()> + Send,
        grace: std::time::Duration,
    ) -> std::io::Result<()> {
        poem::Server::new_with_acceptor(self.acceptor)
            .http2_max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .run_with_graceful_shutdown(app(state, max_body_bytes), shutdown, Some(grace))
            .await
    }
}

#[handler]
fn healthz() -> &'static str {
    "ok"
}

#[handler]
async fn readyz(state: Data<&AppState>) -> Response {
    match state.store().ping().await {
        Ok(()) => "ready".into_response(),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "the database is unreachable").into_response()
        }
    }
}

#[handler]
fn metrics() -> Response {
    prometheus_handle().render().with_content_type("text/plain; version=0.0.4").into_response()
}

/// Headers as (lower-case name, value) pairs, for the kernel's webhook checks.
fn lowercase_headers(headers: &poem::http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str().to_ascii_lowercase(), value.to_str().ok()?.to_owned())))
        .collect()
}

/// The web chat: a page where a driver signs in (or registers) and books by typing, over
/// `POST /v1/chat/web/messages`.
#[handler]
fn chat_page() -> poem::web::Html<&'static str> {
    poem::web::Html(include_str!("chat_page.html"))
}

/// A chat channel's webhook (`POST /v1/webhooks/chat/{channel}`, e.g. Telegram's). Outside the
/// OpenAPI document for the same reasons as the payment webhooks. The messages are stored before
/// the answer (200), and answered in the background through the channel; 401 when the channel's
/// secret or signature does not match; 404 for a channel that is not configured.
#[handler]
async fn chat_webhook(
    state: Data<&AppState>,
    Path(channel): Path<String>,
    headers: &poem::http::HeaderMap,
    body: Vec<u8>,
) -> Response {
    let headers = lowercase_headers(headers);
    match state.kernel.chat_webhook(&channel, &headers, &body).await {
        Ok(n_new) => poem::web::Json(serde_json::json!({ "received": true, "new_messages": n_new })).into_response(),
        Err(error) => crate::problem::ApiError::from(error).into_response(),
    }
}

/// A channel's check of its webhook URL (`GET /v1/webhooks/chat/{channel}?…`, WhatsApp's
/// `hub.challenge`): 200 with the body the channel expects (`text/plain`); 401 when its token
/// does not match; 422 when the query is not a check; 404 for a channel that is not configured.
#[handler]
async fn chat_subscription(
    state: Data<&AppState>,
    Path(channel): Path<String>,
    poem::web::Query(query): poem::web::Query<Vec<(String, String)>>,
) -> Response {
    match state.kernel.chat_subscription(&channel, &query).await {
        Ok(body) => Response::builder().content_type("text/plain; charset=utf-8").body(body),
        Err(error) => crate::problem::ApiError::from(error).into_response(),
    }
}

/// A payment provider's webhook (`POST /v1/webhooks/payments/{provider}`). Outside the OpenAPI
/// document: the body must reach the provider's signature check byte for byte, whatever its
/// content type, and providers, not API clients, call it. 200 when applied, recorded or seen
/// before; 401 when the signature does not verify; 404 for an unknown provider; 503 when the
/// event cannot be verified now (the provider retries).
#[handler]
async fn payment_webhook(
    state: Data<&AppState>,
    Path(provider): Path<String>,
    headers: &poem::http::HeaderMap,
    body: Vec<u8>,
) -> Response {
    let headers = lowercase_headers(headers);
    match state.kernel.payment_webhook(&provider, &headers, &body).await {
        Ok(outcome) => {
            let outcome = match outcome {
                berth_kernel::payment::WebhookOutcome::Applied => "applied",
                berth_kernel::payment::WebhookOutcome::Duplicate => "duplicate",
                berth_kernel::payment::WebhookOutcome::Ignored => "ignored",
            };
            poem::web::Json(serde_json::json!({ "received": true, "outcome": outcome })).into_response()
        }
        Err(error) => crate::problem::ApiError::from(error).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::{Duration, Instant};

    use poem::listener::Acceptor;
    use poem::web::{LocalAddr, RemoteAddr};

    use super::PatientAcceptor;

    type Accepted = (tokio::io::DuplexStream, LocalAddr, RemoteAddr, poem::http::uri::Scheme);

    /// Answers each accept with the next scripted result.
    struct Scripted {
        results: VecDeque<std::io::Result<()>>,
        calls: usize,
    }

    impl Acceptor for Scripted {
        type Io = tokio::io::DuplexStream;

        fn local_addr(&self) -> Vec<LocalAddr> {
            Vec::new()
        }

        async fn accept(&mut self) -> std::io::Result<Accepted> {
            self.calls += 1;
            self.results.pop_front().expect("accepted past the script")?;
            let (io, _) = tokio::io::duplex(64);
            Ok((io, LocalAddr::default(), RemoteAddr::default(), poem::http::uri::Scheme::HTTP))
        }
    }

    #[tokio::test]
    async fn failed_accepts_are_waited_out_and_never_returned() {
        let emfile = || Err(std::io::Error::from_raw_os_error(24));
        let aborted = || Err(std::io::ErrorKind::ConnectionAborted.into());
        let script = [emfile(), emfile(), emfile(), aborted(), Ok(())];
        let mut acceptor = PatientAcceptor::new(Scripted { results: script.into_iter().collect(), calls: 0 });
        let started = Instant::now();
        acceptor.accept().await.expect("the connection after the failures");
        assert_eq!(acceptor.inner.calls, 5);
        // Paused 5, 10 and 20 ms after the three EMFILEs; not at all after the aborted connection.
        assert!(started.elapsed() >= Duration::from_millis(35), "paused only {:?}", started.elapsed());
    }
}
