//! Spawns the real server in-process on port 0 with a fresh database (a new SQLite file, or a
//! new PostgreSQL database when `BERTH_TEST_POSTGRES_URL` is set) and talks HTTP to it.

use berth::RunningServer;
use berth::config::{Config, Secret};
use reqwest::Method;
use serde_json::{Value, json};

pub const ADMIN_KEY: &str = "berth_adm_test-bootstrap-key-0123456789abcdefghijkl";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub base_url: String,
    pub config: Config,
    server: Option<RunningServer>,
    pub client: reqwest::Client,
    _data_dir: tempfile::TempDir,
    postgres_db: Option<String>,
}

/// A response, with the body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
    pub text: String,
    pub retry_after: Option<String>,
}

impl Resp {
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        self.body
    }

    /// Asserts an RFC 9457 problem with this status and returns it.
    #[track_caller]
    pub fn problem(self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        assert_eq!(self.content_type, "application/problem+json", "body: {}", self.text);
        assert_eq!(self.body["status"], status, "body: {}", self.text);
        assert!(self.body["detail"].as_str().is_some_and(|d| !d.is_empty()), "problem without detail: {}", self.text);
        if status == 503 {
            let seconds = self.retry_after.as_deref().and_then(|value| value.parse::<u64>().ok());
            assert!(seconds.is_some_and(|s| s > 0), "a 503 says when to retry: Retry-After {:?}", self.retry_after);
        }
        self.body
    }
}

/// A child process (a `berth` binary under test), killed when dropped: a failing assertion
/// must leave nothing running (an orphan would also hold the test's output open).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn postgres_url() -> Option<String> {
    std::env::var("BERTH_TEST_POSTGRES_URL").ok().filter(|url| !url.is_empty())
}

/// Replaces the database name in a PostgreSQL URL.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(base, query)| (base, Some(query)));
    let slash = base.rfind('/').filter(|idx| *idx > "postgres://".len()).unwrap_or(base.len());
    let mut result = format!("{}/{database}", &base[..slash]);
    if let Some(query) = query {
        result.push('?');
        result.push_str(query);
    }
    result
}

async fn create_postgres_database(admin_url: &str) -> (String, String) {
    use sea_orm::ConnectionTrait;
    let name = format!("berth_t_{}", uuid::Uuid::now_v7().simple());
    let admin = sea_orm::Database::connect(admin_url).await.expect("connect to BERTH_TEST_POSTGRES_URL");
    admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create test database");
    admin.close().await.ok();
    (with_database(admin_url, &name), name)
}

async fn drop_postgres_database(admin_url: &str, name: &str) {
    use sea_orm::ConnectionTrait;
    if let Ok(admin) = sea_orm::Database::connect(admin_url).await {
        let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
        admin.close().await.ok();
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, customise: impl FnOnce(&mut Config)) -> TestApp {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config { data_dir: data_dir.path().to_path_buf(), ..Config::default() };
        config.http.listen = "127.0.0.1:0".parse().unwrap();
        config.http.shutdown_grace_secs = 5;
        config.database.max_connections = 8;
        config.auth.admin_key = Some(Secret::new(ADMIN_KEY));
        // Bundled plugins load from one cache shared by every test; no file watcher per server.
        config.plugins.cache_dir = Some(std::env::temp_dir().join("berth-test-plugin-cache"));
        config.plugins.watch = false;
        // MQTT only where a test asks for it (it would take 1883 otherwise).
        config.mqtt.mode = berth::config::MqttMode::Off;
        let mut postgres_db = None;
        if backend == Backend::Postgres {
            let admin_url = postgres_url().expect("postgres backend needs BERTH_TEST_POSTGRES_URL");
            let (url, name) = create_postgres_database(&admin_url).await;
            config.database.url = Some(Secret::new(url));
            postgres_db = Some(name);
        }
        customise(&mut config);
        let store = berth::open_store(&config).await.expect("open store");
        let server = berth::start(&config, store, std::future::pending()).await.expect("start server");
        TestApp {
            base_url: format!("http://{}", server.addr),
            config,
            server: Some(server),
            client: reqwest::Client::new(),
            _data_dir: data_dir,
            postgres_db,
        }
    }

    /// Runs SQL on the test database over a connection of its own (to set up what the API
    /// cannot, such as a trigger that makes a write fail).
    pub async fn execute_sql(&self, sql: &str) {
        use sea_orm::ConnectionTrait;
        let db = sea_orm::Database::connect(self.config.database_url()).await.expect("connect to the test database");
        db.execute_unprepared(sql).await.unwrap_or_else(|error| panic!("{sql}: {error}"));
        db.close().await.expect("close");
    }

    /// One number from the test database, over a connection of its own.
    pub async fn query_i64(&self, sql: &str) -> i64 {
        use sea_orm::ConnectionTrait;
        let db = sea_orm::Database::connect(self.config.database_url()).await.expect("connect to the test database");
        let statement = sea_orm::Statement::from_string(db.get_database_backend(), sql);
        let row = db.query_one(statement).await.unwrap_or_else(|error| panic!("{sql}: {error}")).expect("a row");
        let value: i64 = row.try_get_by_index(0).unwrap_or_else(|error| panic!("{sql}: {error}"));
        db.close().await.expect("close");
        value
    }

    /// The running server's MQTT side, when the test turned MQTT on.
    pub fn mqtt(&self) -> &berth::MqttRunning {
        self.server.as_ref().expect("server running").mqtt.as_ref().expect("MQTT is on for this test")
    }

    /// The running server's kernel, for what the API does not expose (yet).
    pub fn kernel(&self) -> &berth_kernel::Kernel {
        &self.server.as_ref().expect("server running").state.kernel
    }

    /// A driver token for the account a chat channel created (or will create) for its user, so a
    /// test can look at that driver's bookings and conversations through the API.
    pub async fn channel_driver_token(&self, channel: &str, external_user: &str) -> String {
        let driver = self.kernel().driver_for_external_subject(channel, external_user, None).await.unwrap();
        self.server.as_ref().expect("server running").state.tokens.issue(driver.id).token
    }

    /// Stops the server (graceful) and starts a new one on the same database and data dir.
    pub async fn restart(&mut self) {
        self.server.take().expect("server running").stop().await.expect("clean stop");
        let store = berth::open_store(&self.config).await.expect("reopen store");
        let server = berth::start(&self.config, store, std::future::pending()).await.expect("restart server");
        self.base_url = format!("http://{}", server.addr);
        self.server = Some(server);
    }

    /// Stops the server and drops the test database. Called at the end of a passing test.
    pub async fn cleanup(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("clean stop");
        }
        if let (Some(name), Some(admin_url)) = (self.postgres_db.take(), postgres_url()) {
            drop_postgres_database(&admin_url, &name).await;
        }
    }

    pub async fn request(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let mut request = self.client.request(method, format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.expect("request sent")).await
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Resp {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base_url))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.expect("request sent")).await
    }

    /// A POST without a token, with these headers and this exact body (a provider's webhook).
    pub async fn client_request(&self, path: &str, headers: &[(&str, &str)], body: String) -> Resp {
        let mut request =
            self.client.post(format!("{}{path}", self.base_url)).header("content-type", "application/json").body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read(request.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request(Method::PATCH, path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request(Method::PUT, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.request(Method::DELETE, path, Some(token), None).await
    }

    /// Creates an operator with an admin, a staff and an integration key.
    pub async fn new_tenant(&self, slug: &str) -> Tenant {
        let operator = self
            .post("/v1/operators", ADMIN_KEY, json!({"name": format!("{slug} parking"), "slug": slug}))
            .await
            .expect(201);
        let operator_id = operator["id"].as_str().unwrap().to_owned();
        let key = |name: &str, kind: &str, role: Option<&str>| {
            let mut body = json!({"name": name, "kind": kind});
            if let Some(role) = role {
                body["role"] = json!(role);
            }
            body
        };
        let path = format!("/v1/operators/{operator_id}/keys");
        let admin_key = self.post(&path, ADMIN_KEY, key("admin", "operator", Some("operator_admin"))).await.expect(201);
        let staff_key = self.post(&path, ADMIN_KEY, key("staff", "operator", Some("operator_staff"))).await.expect(201);
        let integration_key = self.post(&path, ADMIN_KEY, key("ttn", "integration", None)).await.expect(201);
        Tenant {
            operator_id,
            admin_key: admin_key["token"].as_str().unwrap().to_owned(),
            staff_key: staff_key["token"].as_str().unwrap().to_owned(),
            integration_key: integration_key["token"].as_str().unwrap().to_owned(),
        }
    }

    /// Registers a driver and logs in; returns the bearer token.
    pub async fn new_driver(&self, email: &str) -> String {
        let password = "correct horse battery staple";
        self.request(Method::POST, "/v1/drivers", None, Some(json!({"email": email, "password": password})))
            .await
            .expect(201);
        let login = self
            .request(Method::POST, "/v1/drivers/login", None, Some(json!({"email": email, "password": password})))
            .await
            .expect(200);
        login["access_token"].as_str().unwrap().to_owned()
    }
}

async fn read(response: reqwest::Response) -> Resp {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .map(|value| value.split(';').next().unwrap_or_default().trim().to_owned())
        .unwrap_or_default();
    let retry_after = response.headers().get("retry-after").and_then(|value| value.to_str().ok()).map(str::to_owned);
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp { status, content_type, body, text, retry_after }
}

pub struct Tenant {
    pub operator_id: String,
    pub admin_key: String,
    pub staff_key: String,
    pub integration_key: String,
}

/// A site body in Porto; `name` distinguishes sites in a test.
pub fn porto_site(name: &str) -> Value {
    json!({
        "kind": "off_street",
        "name": name,
        "location": {"lat": 41.150691773, "lon": -8.609611988},
        "address": {"street": "Rua de Fernandes Tomás", "locality": "Porto", "country": "PT"},
        "timezone": "Europe/Lisbon",
        "currency": "EUR",
        "opening_hours": [{"days": ["mon", "tue", "wed", "thu", "fri"], "opens": "07:00", "closes": "22:00"}],
        "max_stay_minutes": 480,
        "allowed_vehicle_types": ["car", "motorcycle"],
        "max_height_cm": 210
    })
}

/// `n` spaces `P-0001`.. around the Porto site.
pub fn spaces(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|idx| {
                json!({
                    "code": format!("P-{:04}", idx + 1),
                    "location": {"lat": 41.150691773 + (idx / 50) as f64 * 0.00005, "lon": -8.609611988 + (idx % 50) as f64 * 0.00003},
                    "ev_charger": idx % 10 == 0,
                    "accessible": idx % 25 == 0
                })
            })
            .collect(),
    )
}

impl Tenant {
    pub async fn create_site(&self, app: &TestApp, name: &str) -> String {
        app.post("/v1/sites", &self.admin_key, porto_site(name)).await.expect(201)["id"].as_str().unwrap().to_owned()
    }

    /// Creates a site with `n` spaces; returns (site id, space ids).
    pub async fn site_with_spaces(&self, app: &TestApp, name: &str, n: usize) -> (String, Vec<String>) {
        let site_id = self.create_site(app, name).await;
        let created =
            app.post(&format!("/v1/sites/{site_id}/spaces/bulk"), &self.admin_key, spaces(n)).await.expect(201);
        let ids =
            created["items"].as_array().unwrap().iter().map(|space| space["id"].as_str().unwrap().to_owned()).collect();
        (site_id, ids)
    }
}

/// Runs each named `async fn(TestApp)` on SQLite, and on PostgreSQL when
/// `BERTH_TEST_POSTGRES_URL` is set.
#[macro_export]
macro_rules! on_each_backend {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let mut app = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite).await;
                    super::$name(&mut app).await;
                    app.cleanup().await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if $crate::helpers::postgres_url().is_none() {
                        eprintln!("BERTH_TEST_POSTGRES_URL not set: PostgreSQL run skipped");
                        return;
                    }
                    let mut app = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Postgres).await;
                    super::$name(&mut app).await;
                    app.cleanup().await;
                }
            }
        )*
    };
}

/// A bundled plugin, installed as an operator would with its manifest's allow-list extended to
/// a local fake (`127.0.0.1:port`).
pub fn install_bundled_plugin(plugins_dir: &std::path::Path, id: &str, fake_host: &str) {
    let bundled = std::path::Path::new(berth_plugin_host::BUNDLED_PLUGINS_DIR).join(id);
    let target = plugins_dir.join(id);
    std::fs::create_dir_all(&target).unwrap();
    std::fs::copy(bundled.join("plugin.wasm"), target.join("plugin.wasm")).unwrap();
    let manifest = std::fs::read_to_string(bundled.join("plugin.toml")).unwrap();
    let manifest = manifest.replace("http_hosts = [", &format!("http_hosts = [\"{fake_host}\", "));
    std::fs::write(target.join("plugin.toml"), manifest).unwrap();
}
