//! One raw MQTT client for the tests that craft their own payloads (hostile
//! input, signed manifests changed or replayed, forged chunks, floods): plain
//! rumqttc (MQTT 3.1.1), publishing whatever a test builds and collecting what
//! arrives on its subscriptions. (`constrained.rs` keeps clients of its own on
//! purpose: it shows what a user's plain rumqttc and raw MQTT 5 publishes of a
//! whole file meet at a broker's packet limit.)

use std::time::Duration;

use mqft::proto::{self, Ack, Manifest, Prefix};
use mqft_tests::{Broker, HOST};
use tokio::sync::mpsc;

use crate::util::within;

/// A plain rumqttc client: see the module's doc.
pub struct Raw {
    client: rumqttc::AsyncClient,
    messages: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
}

impl Raw {
    /// Connects as `client_id` and waits for the CONNACK.
    pub async fn connect(broker: &Broker, client_id: &str) -> Raw {
        Raw::connect_to(broker.port(), client_id).await
    }

    /// [`Raw::connect`] by the broker's port, for a thread that cannot borrow it.
    pub async fn connect_to(port: u16, client_id: &str) -> Raw {
        let mut o = rumqttc::MqttOptions::new(client_id, HOST, port);
        // Room for the oversized garbage some tests send.
        o.set_max_packet_size(64 << 20, 64 << 20);
        o.set_keep_alive(Duration::from_secs(30));
        // A flood keeps this many QoS 1 publishes in flight.
        o.set_inflight(100);
        let (client, mut el) = rumqttc::AsyncClient::new(o, 256);
        let (tx, messages) = mpsc::unbounded_channel();
        let (up_tx, up) = tokio::sync::oneshot::channel();
        let mut up_tx = Some(up_tx);
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        if let Some(t) = up_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let _ = tx.send((p.topic, p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        within("the raw client's CONNACK", up).await.unwrap();
        Raw { client, messages, task }
    }

    /// Publishes `payload` on `topic`, QoS 1, not retained.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.into()).await.unwrap();
    }

    /// Publishes `payload` on `topic`, QoS 0 or 1 (`qos1`), not retained; false once
    /// the client is gone.
    pub async fn publish_qos(&self, topic: &str, qos1: bool, payload: impl Into<Vec<u8>>) -> bool {
        let qos = if qos1 { rumqttc::QoS::AtLeastOnce } else { rumqttc::QoS::AtMostOnce };
        self.client.publish(topic, qos, false, payload.into()).await.is_ok()
    }

    /// Publishes `payload` on `topic`, QoS 1, retained (an empty one clears it).
    pub async fn publish_retained(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client.publish(topic, rumqttc::QoS::AtLeastOnce, true, payload.into()).await.unwrap();
    }

    /// Subscribes to `filter` and waits until the broker has it in place.
    pub async fn subscribe(&self, broker: &Broker, client_id: &str, filter: &str) {
        self.client.subscribe(filter, rumqttc::QoS::AtLeastOnce).await.unwrap();
        within("the raw client's subscription", async {
            while !broker.has_subscription(client_id, filter) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    /// The next message for which `wanted` holds (topic, payload).
    pub async fn next(&mut self, what: &str, wanted: impl Fn(&str, &[u8]) -> bool) -> (String, Vec<u8>) {
        within(what, async {
            loop {
                let (topic, payload) = self.messages.recv().await.expect("the raw client's task runs");
                if wanted(&topic, &payload) {
                    return (topic, payload);
                }
            }
        })
        .await
    }

    /// The next ack receiver `from` published for transfer `m`, decoded, for
    /// which `wanted` holds.
    pub async fn next_ack(&mut self, m: &Manifest, from: &str, wanted: impl Fn(&Ack) -> bool) -> Ack {
        let prefix = Prefix::default();
        let (_, payload) = self
            .next("an ack", |topic, payload| {
                matches!(prefix.parse(topic), Some(proto::Topic::Ack(id, rid)) if id == m.id && rid.as_str() == from)
                    && Ack::decode(payload, m.chunk_count).is_ok_and(|ack| wanted(&ack))
            })
            .await;
        Ack::decode(&payload, m.chunk_count).expect("decoded above")
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.task.abort();
    }
}
