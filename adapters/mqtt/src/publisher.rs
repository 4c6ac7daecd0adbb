//! A small QoS 1 publisher: the demo's simulated sensors, tests and the ingest benchmark use it
//! to send uplinks the way a network server would.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::watch;

use crate::ingest::BrokerAddress;

pub struct Publisher {
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
    acked: watch::Receiver<u64>,
}

impl Publisher {
    /// Connects in the background (and reconnects); publishing queues until connected.
    pub fn connect(broker: &BrokerAddress, client_id: &str, credentials: Option<(String, String)>) -> Self {
        let mut options = MqttOptions::new(client_id, &broker.host, broker.port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(1000)
            .set_max_packet_size(1024 * 1024, 1024 * 1024);
        if let Some((user, pass)) = credentials {
            options.set_credentials(user, pass);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 4096);
        let (acks, acked) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => acks.send_modify(|n| *n += 1),
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(%error, "publisher connection lost; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Self { client, task, acked }
    }

    /// Queues one QoS 1 message.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), rumqttc::ClientError> {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload).await
    }

    /// Messages the broker has acknowledged so far.
    pub fn acked(&self) -> u64 {
        *self.acked.borrow()
    }

    /// Waits until the broker has acknowledged `n` messages in all.
    pub async fn wait_acked(&mut self, n: u64, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.acked.wait_for(|acked| *acked >= n)).await.is_ok_and(|r| r.is_ok())
    }

    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// A plain QoS 1 subscriber that only counts what it receives: the benchmark's measure of the
/// raw broker.
pub struct CountingSubscriber {
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingSubscriber {
    /// Connects, subscribes to `filter` and returns once the broker confirmed the subscription.
    pub async fn start(
        broker: &BrokerAddress,
        client_id: &str,
        filter: &str,
    ) -> Result<Self, rumqttc::ConnectionError> {
        let mut options = MqttOptions::new(client_id, &broker.host, broker.port);
        options.set_keep_alive(Duration::from_secs(30)).set_max_packet_size(1024 * 1024, 1024 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let _ = client.try_subscribe(filter, QoS::AtLeastOnce);
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await? {
                break;
            }
        }
        let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = received.clone();
        let task = tokio::spawn(async move {
            let _client = client;
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(Packet::Publish(_)) = event {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        Ok(Self { received, task })
    }

    pub fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for CountingSubscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}
