//! Pacing: the rate limits of one connection ([`Config::rate`],
//! [`Config::max_publish_rate`]) as token buckets, in the feed task of `conn.rs`.
//!
//! Every packet this client hands to rumqttc passes the feed task, so one pacer
//! there counts all of it: chunks, the protocol's control messages (manifests,
//! ends of round, a receiver's acks) and subscriptions. Only the PUBACKs rumqttc
//! writes for incoming QoS 1 publishes and its PINGREQs pass it by: 4 and 2 bytes,
//! which the keep-alive and the broker's own sending bound.
//!
//! A bucket may go into debt: a publish goes out whenever the bucket holds at
//! least nothing, and takes its whole cost, so that one chunk larger than the
//! burst still passes (a bucket that had to hold a whole chunk first would need a
//! burst of a chunk, seconds of a slow link's rate) and the next waits until the
//! debt is paid. Over any stretch of time, what went out is at most the burst plus
//! the rate times the time, plus one packet. The burst is [`BURST`] worth of the
//! rate (at least one publish), so that an idle connection does not save up more
//! than a tariff or a broker's per-second count would forgive.
//!
//! Waiting for tokens happens before rumqttc has the packet, so it never counts
//! towards the broker's time to acknowledge (`conn.rs`'s `Owed`), which starts
//! when rumqttc writes the packet. The sender's own retransmission timeout is
//! raised to cover what pacing holds queued ([`queue_time`]), so that waiting for
//! tokens is not taken for loss.

use std::time::Duration;

use tokio::time::{sleep, Instant};

use crate::config::Config;

/// How much of the rate a bucket holds when full.
pub(crate) const BURST: Duration = Duration::from_millis(100);

/// What a packet counts against the byte rate beyond its topic and payload: a
/// publish's fixed header (2 to 5 bytes), topic length (2), packet id (2) and
/// MQTT 5 properties length (1), rounded up. Close enough for a rate to within a
/// per cent at any chunk size worth pacing.
pub(crate) const HEADER_ESTIMATE: usize = 10;

/// The rate limits of one connection.
#[derive(Debug)]
pub(crate) struct Pacer {
    bytes: Option<Bucket>,
    publishes: Option<Bucket>,
}

impl Pacer {
    /// A pacer for the limits in `cfg`, or `None` without any.
    pub fn new(cfg: &Config, now: Instant) -> Option<Self> {
        let bytes = cfg.rate.map(|r| Bucket::new(r as f64, now));
        let publishes = cfg.max_publish_rate.map(|r| Bucket::new(f64::from(r), now));
        (bytes.is_some() || publishes.is_some()).then_some(Pacer { bytes, publishes })
    }

    /// Waits until a packet of `bytes` may go out, then charges it (and one
    /// publish when `publish`). Cancel-safe: nothing is charged before it returns.
    pub async fn admit(&mut self, bytes: usize, publish: bool) {
        loop {
            let now = Instant::now();
            let wait = self.wait(now, publish);
            if wait.is_zero() {
                self.charge(bytes, publish);
                return;
            }
            sleep(wait).await;
        }
    }

    /// How long until a packet may go out.
    fn wait(&mut self, now: Instant, publish: bool) -> Duration {
        let bytes = self.bytes.as_mut().map(|b| b.wait(now)).unwrap_or_default();
        let count = match (&mut self.publishes, publish) {
            (Some(b), true) => b.wait(now),
            _ => Duration::ZERO,
        };
        bytes.max(count)
    }

    fn charge(&mut self, bytes: usize, publish: bool) {
        if let Some(b) = &mut self.bytes {
            b.tokens -= bytes as f64;
        }
        if let (Some(b), true) = (&mut self.publishes, publish) {
            b.tokens -= 1.0;
        }
    }
}

/// One token bucket: `rate` tokens a second, up to `burst`; `tokens` may be
/// negative (a debt, see the module's docs).
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Self {
        // A rate of 0 is refused by the CLI; here it would never refill.
        let rate = rate.max(1.0);
        let burst = (rate * BURST.as_secs_f64()).max(1.0);
        Bucket { rate, burst, tokens: burst, last: now }
    }

    /// Refills for the time since the last call; how long until the debt is paid.
    fn wait(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// How long pacing may hold a control message queued behind `queued` packets of
/// `packet` bytes (at most; the feed task's channel and the one it is pacing):
/// the time they take at the rate limits of `cfg`. Zero without limits.
pub(crate) fn queue_time(cfg: &Config, queued: u32, packet: u32) -> Duration {
    let bytes = cfg.rate.map(|r| f64::from(queued) * f64::from(packet) / (r.max(1) as f64));
    let count = cfg.max_publish_rate.map(|r| f64::from(queued) / f64::from(r.max(1)));
    let secs = bytes.unwrap_or(0.0).max(count.unwrap_or(0.0));
    Duration::from_secs_f64(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: Option<u64>, publishes: Option<u32>) -> Config {
        let mut cfg = Config::new("127.0.0.1", 1883);
        cfg.rate = rate;
        cfg.max_publish_rate = publishes;
        cfg
    }

    /// Within the timer's millisecond per sleep.
    #[track_caller]
    fn assert_near(took: Duration, expected: Duration) {
        let slack = Duration::from_millis(120);
        assert!(took >= expected && took <= expected + slack, "{took:?}, expected {expected:?}");
    }

    #[test]
    fn no_limits_no_pacer() {
        assert!(Pacer::new(&limits(None, None), Instant::now()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_keep_to_the_rate_after_the_burst() {
        let started = Instant::now();
        let mut p = Pacer::new(&limits(Some(100_000), None), started).unwrap();
        // 10 packets of 50 kB: the first goes at once (into debt), each next
        // one when the debt is paid, less the 10 kB burst it started with.
        for _ in 0..10 {
            p.admit(50_000, true).await;
        }
        assert_near(started.elapsed(), Duration::from_millis(4400));
    }

    #[tokio::test(start_paused = true)]
    async fn publishes_keep_to_their_rate_whatever_their_size() {
        let started = Instant::now();
        let mut p = Pacer::new(&limits(None, Some(100)), started).unwrap();
        // The burst of 10 and one into debt, then one every 10 ms.
        for _ in 0..111 {
            p.admit(1 << 20, true).await;
        }
        assert_near(started.elapsed(), Duration::from_secs(1));
        // A subscription is not a publish: it does not wait for one.
        let before = Instant::now();
        p.admit(10, false).await;
        assert_eq!(before.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_saves_up_only_the_burst() {
        let started = Instant::now();
        let mut p = Pacer::new(&limits(Some(1000), None), started).unwrap();
        sleep(Duration::from_secs(60)).await;
        let idle = Instant::now();
        // 100 bytes of burst and 100 into debt, then 100 bytes every 0.1 s:
        // 1100 bytes take 0.9 s, not nothing.
        for _ in 0..11 {
            p.admit(100, true).await;
        }
        assert_near(idle.elapsed(), Duration::from_millis(900));
    }

    #[test]
    fn queue_time_is_the_slower_of_the_limits() {
        assert_eq!(queue_time(&limits(None, None), 3, 1 << 20), Duration::ZERO);
        assert_eq!(queue_time(&limits(Some(512 << 10), None), 3, 256 << 10), Duration::from_millis(1500));
        assert_eq!(queue_time(&limits(Some(512 << 10), Some(1)), 3, 256 << 10), Duration::from_secs(3));
    }
}
