//! Receiver pools ([`ReceiveOptions::pool`](super::ReceiveOptions::pool)): several receivers that share the
//! offers of a prefix through an MQTT shared subscription, so that each transfer
//! is taken by one of them.
//!
//! Everything here is local to the receiver: the wire does not change. A member
//! differs from a lone receiver in four ways, each for a reason found on
//! Mosquitto 2.0.11 (docs/ARCHITECTURE.md, "Receiver pools"):
//! - it subscribes `$share/<pool>/<prefix>/+/manifest`, so that the broker hands
//!   each publication of a manifest to one member; control messages stay on the
//!   plain filter, and a member that does not hold the transfer ignores them;
//! - it ignores manifests delivered as retained: Mosquitto 2.0 hands the retained
//!   messages to every member that subscribes (MQTT 5 says a shared subscription
//!   gets none), which would make every member that starts late take every
//!   transfer in progress. Offers reach a member through the sender's live
//!   publications: the first one, and the re-publications while the sender still
//!   needs a receiver or one of its receivers is quiet;
//! - it connects with a clean session: Mosquitto keeps handing its share of the
//!   offers to the session of a member that died, where they wait unread;
//! - its default receiver id, and so its client id, is its own (see
//!   [`member_id`]): members on one host into one shared directory would
//!   otherwise take each other's connection.

use crate::proto::{self, ReceiverId};

/// The longest pool name: it is one topic level of the shared filter.
pub const MAX_POOL_NAME_LEN: usize = 64;

/// Checks a pool name: 1 to [`MAX_POOL_NAME_LEN`] characters of `[0-9a-z_-]`,
/// the alphabet of the protocol's topic levels (a `/`, `+` or `#` would change
/// the filter's meaning).
pub fn check_pool_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_POOL_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("pool name {name:?}: 1 to {MAX_POOL_NAME_LEN} characters of 0-9, a-z, _ and -"))
    }
}

/// The shared form of a manifest filter.
pub(super) fn shared_filter(pool: &str, filter: &str) -> String {
    format!("$share/{pool}/{filter}")
}

/// A pool member's default receiver id: the lone receiver's default for `dir`
/// ([`super::default_receiver_id`]) with 8 random hex digits of its own. Members
/// on one host into one shared directory get distinct ids, and a member that
/// restarts is a new receiver to the sender (which takes it as a join; with a
/// shared directory it resumes the `.part`).
pub fn member_id(dir: &std::path::Path) -> ReceiverId {
    let base = super::default_receiver_id(dir);
    // 9 bytes for the dash and the hex: the base is cut to keep the id within 64.
    let base = &base.as_str()[..base.as_str().len().min(proto::topic::MAX_RECEIVER_ID_LEN - 9)];
    let id = format!("{base}-{:08x}", rand::random::<u32>());
    // A valid id cut at a character boundary (the alphabet is ASCII), plus a dash
    // and hex digits, is a valid id.
    ReceiverId::new(&id).expect("a receiver id plus a dash and hex is a valid receiver id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_are_one_topic_level_of_the_alphabet() {
        assert!(check_pool_name("workers").is_ok());
        assert!(check_pool_name("site-1_a").is_ok());
        for bad in ["", "a/b", "+", "#", "Upper", "a b", &"x".repeat(65)] {
            assert!(check_pool_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn members_into_one_directory_get_distinct_ids() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (member_id(dir.path()), member_id(dir.path()));
        assert_ne!(a, b);
        assert!(a.as_str().starts_with(super::super::default_receiver_id(dir.path()).as_str()));
        assert!(a.as_str().len() <= proto::topic::MAX_RECEIVER_ID_LEN);
    }
}
