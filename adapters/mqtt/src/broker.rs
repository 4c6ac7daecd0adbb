//! The embedded broker: rumqttd on its own threads, MQTT 3.1.1 over TCP. It keeps messages in
//! memory only; a deployment that needs queued messages to outlive berth uses an external broker
//! with persistence (see docs/operations.md).

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use crate::MqttError;

/// The client id of berth's own in-process link.
const LOCAL_CLIENT_ID: &str = "berth-ingest-local";

/// A running embedded broker. It runs until the process exits.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    /// The in-process link for berth's own ingest client, until it is taken.
    link: Arc<Mutex<Option<LocalLink>>>,
}

/// A connection to the embedded broker's router inside this process: messages arrive without
/// being encoded, sent through the loopback and decoded again.
pub struct LocalLink {
    pub(crate) tx: LinkTx,
    pub(crate) rx: LinkRx,
}

impl std::fmt::Debug for LocalLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLink").field("connection", &self.rx.id()).finish()
    }
}

impl EmbeddedBroker {
    /// Starts a broker on `listen` (port 0: any free port). `users` maps user names to passwords;
    /// empty means no authentication (keep the broker on loopback then). Fails with an error
    /// naming `setting` when the address is taken.
    pub fn start(
        listen: SocketAddr,
        setting: &'static str,
        max_payload_bytes: usize,
        users: &BTreeMap<String, String>,
    ) -> Result<Self, MqttError> {
        // Bind first, so a taken port is a clear error here rather than a log line from a
        // broker thread; port 0 resolves to a free port this way too.
        let probe = TcpListener::bind(listen).map_err(|source| MqttError::Listen { addr: listen, setting, source })?;
        let addr = probe.local_addr().map_err(|source| MqttError::Listen { addr: listen, setting, source })?;
        drop(probe);

        let connections = ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: max_payload_bytes,
            max_inflight_count: 500,
            auth: (!users.is_empty())
                .then(|| users.iter().map(|(user, pass)| (user.clone(), pass.clone())).collect::<HashMap<_, _>>()),
            external_auth: None,
            dynamic_filters: true,
        };
        let server = ServerSettings {
            name: "berth-v4".into(),
            listen: addr,
            tls: None,
            next_connection_delay_ms: 0,
            connections,
        };
        let config = Config {
            id: 0,
            router: RouterConfig {
                max_connections: 10_010,
                max_outgoing_packet_count: 1_000,
                max_segment_size: 16 * 1024 * 1024,
                max_segment_count: 10,
                custom_segment: None,
                initialized_filters: None,
                shared_subscriptions_strategy: Default::default(),
            },
            v4: Some(HashMap::from([("1".to_owned(), server)])),
            ..Config::default()
        };
        let mut broker = Broker::new(config);
        // The router runs from `Broker::new` on, so the link connects before the listeners.
        let (tx, rx) = broker.link(LOCAL_CLIENT_ID).map_err(|error| MqttError::Broker(error.to_string()))?;
        let link = Arc::new(Mutex::new(Some(LocalLink { tx, rx })));
        std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                if let Err(error) = broker.start() {
                    tracing::error!(%error, "the embedded MQTT broker stopped");
                }
            })
            .map_err(|error| MqttError::Broker(error.to_string()))?;
        // Ready when it accepts connections.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(_) => break,
                Err(error) if Instant::now() > deadline => {
                    return Err(MqttError::Broker(format!("not accepting connections on {addr}: {error}")));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        tracing::info!(%addr, "embedded MQTT broker listening");
        Ok(Self { addr, link })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The in-process link for berth's ingest client; `None` once taken.
    pub fn take_link(&self) -> Option<LocalLink> {
        self.link.lock().expect("invariant: the link lock is never poisoned").take()
    }
}
