use super::*;

#[test]
fn refusals_read_as_words() {
    assert_eq!(words("QuotaExceeded"), "quota exceeded");
    assert_eq!(words("Banned"), "banned");
    match failure5(rumqttc::v5::ConnectionError::ConnectionRefused(p5::ConnectReturnCode::NotAuthorized)) {
        Failure::Refused(r) => assert_eq!(r, "not authorized"),
        other => panic!("{other:?}"),
    }
    match failure4(rumqttc::ConnectionError::ConnectionRefused(rumqttc::ConnectReturnCode::BadUserNamePassword)) {
        Failure::Refused(r) => assert_eq!(r, "bad user name or password"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn dropped_publishes_are_queued_again_as_new_ones() {
    let cfg = Config::new("127.0.0.1", 1883);
    let opts = crate::conn::options(&cfg, "c".into(), true, 1024, 1024);
    let (_client, mut el) = new(&cfg, &opts).unwrap();
    let mut sent = p5::Publish::new("t", QoS5::AtLeastOnce, "x", None);
    sent.pkid = 7;
    sent.dup = true;
    let dropped = Dropped::V5(vec![
        rumqttc::v5::Request::Publish(sent.clone()),
        rumqttc::v5::Request::Publish(sent),
        rumqttc::v5::Request::Disconnect,
    ]);
    assert_eq!(dropped.publishes(), 2);
    el.requeue(dropped);
    let EventLoop::V5 { el, .. } = el else { panic!("mqtt 5 is the default") };
    let fresh = p5::Publish::new("t", QoS5::AtLeastOnce, "x", None);
    assert_eq!(
        Vec::from(el.pending.clone()),
        [
            rumqttc::v5::Request::Publish(fresh.clone()),
            rumqttc::v5::Request::Publish(fresh),
            rumqttc::v5::Request::Disconnect
        ]
    );
}

#[test]
fn only_qos1_publishes_and_the_disconnect_are_held() {
    assert!(held4(&rumqttc::Request::Publish(rumqttc::Publish::new("t", rumqttc::QoS::AtLeastOnce, "x"))));
    assert!(!held4(&rumqttc::Request::Publish(rumqttc::Publish::new("t", rumqttc::QoS::AtMostOnce, "x"))));
    assert!(held4(&rumqttc::Request::Disconnect(rumqttc::Disconnect)));
    assert!(!held4(&rumqttc::Request::PingReq(rumqttc::PingReq)));
    assert!(held5(&rumqttc::v5::Request::Publish(p5::Publish::new("t", QoS5::AtLeastOnce, "x", None))));
    assert!(!held5(&rumqttc::v5::Request::Publish(p5::Publish::new("t", QoS5::AtMostOnce, "x", None))));
    assert!(held5(&rumqttc::v5::Request::Disconnect));
    assert!(!held5(&rumqttc::v5::Request::PingReq));
}

#[test]
fn network_errors_keep_their_kind_and_say_it_once() {
    let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
    match failure4(rumqttc::ConnectionError::Io(refused)) {
        Failure::Connect(ConnectError::Io(e)) => {
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
            assert_eq!(e.to_string(), "connection refused");
        }
        other => panic!("{other:?}"),
    }
    let wrapped = rumqttc::TlsError::Io(io::Error::new(io::ErrorKind::TimedOut, "timed out"));
    match failure5(rumqttc::v5::ConnectionError::Tls(wrapped)) {
        Failure::Connect(ConnectError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::TimedOut),
        other => panic!("{other:?}"),
    }
    match failure5(rumqttc::v5::ConnectionError::RequestsDone) {
        Failure::Closed => {}
        other => panic!("{other:?}"),
    }
}
