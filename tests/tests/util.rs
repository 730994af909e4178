//! Helpers for the tests that drive the `mqft` library: clients aimed at a
//! harness broker, receive options, and bounded waits for events.

use std::fmt::Debug;
use std::fs;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use mqft::proto::ReceiverId;
use mqft::{Client, Config, Handle, MqttVersion, ReceiveEvent, ReceiveHandle, ReceiveOptions};
use mqft_tests::Broker;

/// Upper bound on any one step; a hang fails the test instead of blocking CI.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Await `future` for at most [`LIMIT`], panicking with `what` after that.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, future).await.unwrap_or_else(|_| panic!("timed out after {LIMIT:?} waiting for {what}"))
}

/// A client of `broker` speaking `version`.
pub fn client(broker: &Broker, version: MqttVersion) -> Client {
    let mut cfg = Config::from_url(&broker.url()).unwrap();
    cfg.version = version;
    Client::new(cfg)
}

/// Receive options with the receiver id `id`.
pub fn receive_opts(id: &str) -> ReceiveOptions {
    let mut o = ReceiveOptions::default();
    o.receiver_id = Some(ReceiverId::new(id).unwrap());
    o
}

/// The receiver id `id`.
pub fn rid(id: &str) -> ReceiverId {
    ReceiverId::new(id).unwrap()
}

/// Waits for the receiver's first `Connected`, so that the test's sender starts
/// with a receiver in place (the retained manifest would cover a late one too).
pub async fn connected(rx: &mut ReceiveHandle) {
    next_matching(rx, "the receiver's Connected", |e| matches!(e, ReceiveEvent::Connected { .. })).await;
}

/// The next event of `handle` for which `wanted` holds, skipping the others,
/// within [`LIMIT`].
///
/// # Panics
///
/// On the timeout, or when the events end first (the work ended).
pub async fn next_matching<E: Debug, R>(
    handle: &mut Handle<E, R>,
    what: &str,
    mut wanted: impl FnMut(&E) -> bool,
) -> E {
    within(what, async {
        loop {
            match handle.next_event().await {
                Some(e) if wanted(&e) => return e,
                Some(_) => {}
                None => panic!("the events ended before {what}"),
            }
        }
    })
    .await
}

/// Every event left, until the work ends, within [`LIMIT`].
pub async fn drain<E, R>(handle: &mut Handle<E, R>) -> Vec<E> {
    within("the end of the events", async {
        let mut events = Vec::new();
        while let Some(e) = handle.next_event().await {
            events.push(e);
        }
        events
    })
    .await
}

/// Stops a receive and returns every event it gave after the ones already read;
/// it must end without an error.
pub async fn stop_receive(mut rx: ReceiveHandle) -> Vec<ReceiveEvent> {
    rx.cancel();
    let events = drain(&mut rx).await;
    within("the receive", rx.wait()).await.unwrap();
    events
}

/// The visible files of a directory, sorted.
pub fn visible(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}
