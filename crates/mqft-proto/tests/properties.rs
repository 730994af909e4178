//! Property tests: whatever the losses, sizes and restarts, every run ends, with a
//! byte-identical file at every waited-on receiver or with a clear failure; a wrong
//! file never appears under its final name.

mod harness;

use std::time::Duration;

use harness::{Action, Link, Retained, Sim, SimBuilder};
use mqft_proto::Wait;
use proptest::prelude::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// File sizes around the chunk size's edges, and some in between.
fn size_for(kind: u8, chunk: u32, extra: usize) -> usize {
    let c = chunk as usize;
    match kind % 6 {
        0 => 0,
        1 => 1,
        2 => c * (1 + extra % 40),     // an exact multiple
        3 => c * (1 + extra % 40) + 1, // one byte over
        4 => c * (extra % 40) + c - 1, // one byte short
        _ => extra % 60_000,
    }
}

/// A patient sender: at 50% loss, several exchanges in a row fail now and then.
fn patient(sim: &mut Sim, receivers: usize) {
    sim.sender_cfg.max_retries = 40;
    sim.sender_cfg.max_stalled_rounds = 40;
    sim.sender_cfg.join_timeout = Duration::from_secs(600);
    sim.sender_cfg.wait = Wait::Count(receivers);
    sim.receiver_cfg.give_up_after = Duration::from_secs(3600);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn lossy_links_deliver_identical_files(
        seed in any::<u64>(),
        kind in any::<u8>(),
        extra in any::<usize>(),
        chunk in prop_oneof![Just(1u32), 2u32..64, Just(1000u32), 1000u32..5000],
        receivers in prop_oneof![Just(1usize), Just(3usize)],
        loss in 0.0f64..=0.5,
        dup in 0.0f64..0.3,
        corrupt in 0.0f64..0.1,
        jitter_ms in 0u64..50,
        window in prop_oneof![Just(4u32), 16u32..300],
    ) {
        // Keep the chunk count small enough for a quick run.
        let size = size_for(kind, chunk, extra).min(40_000).min(2_000 * chunk as usize);
        let mut sim = SimBuilder::new(seed, size, chunk)
            .receivers(receivers)
            .link(Link { loss, dup, corrupt, jitter: Duration::from_millis(jitter_ms), ..Link::default() })
            .build();
        sim.sender_cfg.window = window;
        patient(&mut sim, receivers);
        sim.start_sender();
        sim.drive(DAY);
        sim.assert_delivered(0..receivers);
    }

    #[test]
    fn restarts_resume_and_never_leave_a_wrong_file(
        seed in any::<u64>(),
        size in 0usize..200_000,
        loss in 0.0f64..0.3,
        kill_rx_ms in 1u64..400,
        down_ms in 1u64..3000,
        kill_tx_ms in 1u64..400,
        snapshot_every in 1u32..50,
        restart_sender in any::<bool>(),
    ) {
        let mut sim = SimBuilder::new(seed, size, 1000)
            .receivers(2)
            .link(Link { loss, ..Link::default() })
            .build();
        patient(&mut sim, 2);
        sim.receivers[0].service = Duration::from_micros(300);
        sim.receivers[0].snapshot_every = snapshot_every;
        sim.schedule(Duration::from_millis(kill_rx_ms), Action::KillReceiver(0));
        sim.schedule(Duration::from_millis(kill_rx_ms + down_ms), Action::StartReceiver(0));
        if restart_sender {
            sim.schedule(Duration::from_millis(kill_tx_ms), Action::KillSender);
            sim.schedule(Duration::from_millis(kill_tx_ms + 200), Action::StartSender);
        }
        sim.start_sender();
        sim.drive(DAY);
        sim.assert_no_wrong_file();
        // A receiver down for longer than the sender's patience may be declared lost;
        // then the failure is clear. Otherwise both have the file.
        match sim.outcome() {
            Some(Ok(())) => sim.assert_delivered([0, 1]),
            Some(Err(f)) => prop_assert!(
                matches!(f, mqft_proto::SendFailure::ReceiverLost { .. }),
                "unexpected failure {f:?}"
            ),
            None => prop_assert!(false, "no outcome: {:?}", sim.sender_events),
        }
    }

    /// Issue 9: on a broker that never hands a restarted receiver the retained
    /// manifest (rumqttd with a session present, RabbitMQ's wildcard subscriptions),
    /// a receiver killed mid-transfer and restarted with its saved state still gets
    /// the file, soon after it is back, whatever the losses.
    #[test]
    fn restarts_resume_without_the_retained_manifest(
        seed in any::<u64>(),
        size in 20_000usize..200_000,
        loss in 0.0f64..0.3,
        kill_rx_ms in 2u64..400,
        down_ms in 1u64..30_000,
        snapshot_every in 1u32..50,
        never in any::<bool>(),
    ) {
        let mut sim = SimBuilder::new(seed, size, 1000)
            .receivers(2)
            .link(Link { loss, ..Link::default() })
            .build();
        patient(&mut sim, 2);
        // RabbitMQ, or rumqttd with the session it keeps for the receiver.
        sim.retained_mode = if never { Retained::Never } else { Retained::FirstSubscription };
        sim.offline_session = !never;
        sim.receivers[0].service = Duration::from_micros(300);
        sim.receivers[0].snapshot_every = snapshot_every;
        sim.schedule(Duration::from_millis(kill_rx_ms), Action::KillReceiver(0));
        sim.schedule(Duration::from_millis(kill_rx_ms + down_ms), Action::StartReceiver(0));
        sim.start_sender();
        sim.run_until(Duration::from_millis(kill_rx_ms - 1));
        let rx0 = &sim.receivers[0].id;
        let joined = sim.sender.as_ref().unwrap().receivers().any(|(id, _)| id == rx0);
        sim.drive(DAY);
        sim.assert_delivered([0, 1]);
        // A receiver that had joined is quiet to the sender, which publishes the
        // manifest for it every 2 s (losses cost some of them). One killed before
        // it joined waits for the joining re-publications, up to 16 s apart.
        if joined {
            let back = sim.receivers[0].started_at.unwrap();
            let took = sim.finished_at.unwrap().saturating_duration_since(back);
            prop_assert!(took < Duration::from_secs(60), "done {took:?} after the restart");
        }
    }
}

#[test]
fn many_seeds_at_half_loss_with_three_receivers() {
    for seed in 0..100 {
        let mut sim = SimBuilder::new(seed, 30_000, 1000)
            .receivers(3)
            .link(Link { loss: 0.5, dup: 0.05, jitter: Duration::from_millis(10), ..Link::default() })
            .build();
        patient(&mut sim, 3);
        sim.start_sender();
        sim.drive(DAY);
        sim.assert_delivered(0..3);
    }
}

#[test]
fn many_seeds_at_half_loss_with_one_receiver() {
    for seed in 0..200 {
        let mut sim = SimBuilder::new(seed, 20_000, 700).link(Link { loss: 0.5, ..Link::default() }).build();
        patient(&mut sim, 1);
        sim.start_sender();
        sim.drive(DAY);
        sim.assert_delivered([0]);
    }
}
