//! MQTT in: the embedded broker ([`EmbeddedBroker`], rumqttd) that `berth serve` and `berth demo`
//! start by default, and the ingest client ([`MqttIngest`], rumqttc) that subscribes to it or to
//! an external broker, reads each message by its topic (berth native, The Things Stack v3,
//! ChirpStack) and hands the uplink to the kernel.
//!
//! Delivery is at least once: QoS 1 on a persistent session, and a message is acknowledged only
//! after the kernel has stored what it did with it (or rejected it for good). A crash before the
//! acknowledgement means the broker sends the message again; the kernel's dedup makes that
//! harmless. From the embedded broker, whose queue lives in berth's memory anyway, the client
//! reads the router's in-process link ([`LocalLink`]) at QoS 0.

mod broker;
mod filter;
mod ingest;

pub use broker::{EmbeddedBroker, LocalLink};
pub use filter::filter_matches;
pub use ingest::{BrokerAddress, IngestSettings, IngestStats, MqttIngest, Outcome, Subscription};

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("cannot listen on {addr} for the embedded MQTT broker (setting {setting}): {source}")]
    Listen { addr: std::net::SocketAddr, setting: &'static str, source: std::io::Error },
    #[error("the embedded MQTT broker did not start: {0}")]
    Broker(String),
    #[error("{setting}: {message}")]
    Config { setting: &'static str, message: String },
}

mod publisher;
pub use publisher::{CountingSubscriber, Publisher};
