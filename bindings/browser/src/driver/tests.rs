//! The driver on a virtual clock, with scripted server answers (the browser tests run it
//! against the real server through the fault proxy).

use super::*;
use tether_protocol::handshake::{accepted_answer, refusal_answer};

const ID: [u8; 16] = [7; 16];

struct Harness {
    driver: Driver,
    t0: Instant,
}

impl Harness {
    fn new(strategy: Strategy, urls: &[&str]) -> Harness {
        let t0 = Instant::now();
        let config = Config {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            principal: Some("control".into()),
            credentials: Some("password".into()),
            reconnect_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(5),
            strategy,
        };
        let driver = Driver::new(config, t0, Box::new(|| 0.5)).expect("valid settings");
        Harness { driver, t0 }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.driver.poll_action()).collect()
    }

    /// The connection the last actions opened.
    fn connect_of(actions: &[Action]) -> (u32, Vec<String>) {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Connect {
                    conn, protocols, ..
                } => Some((*conn, protocols.clone())),
                _ => None,
            })
            .expect("a connect action")
    }

    fn states(actions: &[Action]) -> Vec<(SessionState, Option<CloseReason>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::State { new, reason, .. } => Some((*new, *reason)),
                _ => None,
            })
            .collect()
    }

    /// Answers connection `conn` with an accepted open/resume.
    fn accept(&mut self, conn: u32, received: u64, ms: u64) -> Vec<Action> {
        let accepted = SessionAccepted {
            session: SessionId::from_bytes(ID),
            token: ResumeToken::from_bytes([ms as u8; 16]),
            reconnect_timeout: Duration::from_secs(60),
            ping_period: Duration::from_secs(10),
            received,
            max_frame: 1 << 20,
            batch: true,
        };
        self.driver
            .on_open(conn, handshake::SUBPROTOCOL, self.at(ms));
        self.driver
            .on_message(conn, &accepted_answer(&accepted.to_headers()), self.at(ms));
        self.actions()
    }

    /// Opens the session; returns its connection.
    fn open(&mut self) -> u32 {
        let (conn, protocols) = Self::connect_of(&self.actions());
        assert_eq!(protocols[0], handshake::SUBPROTOCOL);
        let actions = self.accept(conn, 0, 0);
        assert_eq!(
            Self::states(&actions),
            [(SessionState::ConnectedActive, None)]
        );
        conn
    }
}

fn attempt_of(actions: &[Action]) -> (u32, AttemptInfo) {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Attempt { attempt, info } => Some((*attempt, info.clone())),
            _ => None,
        })
        .expect("an attempt action")
}

fn sends(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Send { .. }))
        .count()
}

#[test]
fn a_cut_session_resumes_when_its_strategy_starts_and_replays_what_was_not_confirmed() {
    let mut h = Harness::new(Strategy::External, &["ws://a"]);
    let conn = h.open();
    let request = h.driver.publish("a/b", b"1", h.at(1)).expect("queued");
    assert_eq!(sends(&h.actions()), 1);
    h.driver.on_close(conn, h.at(2));
    let actions = h.actions();
    assert_eq!(
        Harness::states(&actions),
        [(
            SessionState::RecoveringReconnect,
            Some(CloseReason::TransportError)
        )]
    );
    let (attempt, info) = attempt_of(&actions);
    assert_eq!((info.number, info.reason), (1, CloseReason::TransportError));
    assert!(h.driver.start(attempt, h.at(3)));
    assert!(!h.driver.start(attempt, h.at(3)), "the first call wins");
    assert!(!h.driver.abort(attempt, h.at(3)));
    let (next, protocols) = Harness::connect_of(&h.actions());
    assert!(
        protocols.iter().any(|p| p.starts_with("tether.session.")),
        "a resume: {protocols:?}"
    );
    // The server had not received the publish: it goes out again on the new connection.
    let actions = h.accept(next, 0, 4);
    assert_eq!(
        Harness::states(&actions),
        [(SessionState::ConnectedActive, None)]
    );
    assert_eq!(sends(&actions), 1);
    assert!(h.driver.is_current(next) && !h.driver.is_current(conn));
    assert_eq!(h.driver.pending.front().map(|(r, _)| *r), Some(request));
}

#[test]
fn the_reconnection_timeout_closes_the_session_whatever_the_strategy_does() {
    let mut h = Harness::new(Strategy::External, &["ws://a"]);
    let conn = h.open();
    let request = h.driver.publish("a/b", b"1", h.at(1)).expect("queued");
    let never_sent = {
        h.driver.on_close(conn, h.at(2));
        h.driver.publish("a/b", b"2", h.at(3)).expect("queued")
    };
    let _ = h.actions();
    // Granted: the smaller of 10 s (asked) and 60 s (the server's).
    assert_eq!(h.driver.poll_timeout(), Some(h.at(2 + 10_000)));
    h.driver.on_timer(h.at(5_000));
    assert!(Harness::states(&h.actions()).is_empty());
    h.driver.on_timer(h.at(2 + 10_000));
    let actions = h.actions();
    assert_eq!(
        Harness::states(&actions),
        [(
            SessionState::ClosedFailed,
            Some(CloseReason::ReconnectTimeout)
        )]
    );
    let codes: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Completed {
                request,
                result: Err(f),
            } => Some((*request, f.code)),
            _ => None,
        })
        .collect();
    assert_eq!(
        codes,
        [(request, "outcome_unknown"), (never_sent, "session_closed")]
    );
    assert_eq!(h.driver.poll_timeout(), None);
    let late = h.driver.publish("a/b", b"3", h.at(10_003));
    assert_eq!(late.map_err(|f| f.code), Err("session_closed"));
}

#[test]
fn a_strategy_that_aborts_closes_the_session() {
    let mut h = Harness::new(Strategy::External, &["ws://a"]);
    let conn = h.open();
    h.driver.on_close(conn, h.at(1));
    let (attempt, _) = attempt_of(&h.actions());
    assert!(h.driver.abort(attempt, h.at(2)));
    assert!(!h.driver.start(attempt, h.at(2)));
    assert_eq!(
        Harness::states(&h.actions()),
        [(
            SessionState::ClosedFailed,
            Some(CloseReason::ReconnectAborted)
        )]
    );
}

#[test]
fn a_builtin_starts_after_its_delay_and_sees_the_servers_hint() {
    let constant = Builtin::Constant(Constant::new(Duration::from_millis(100)));
    let mut h = Harness::new(Strategy::Builtin(constant), &["ws://a", "ws://b"]);
    let conn = h.open();
    h.driver.on_close(conn, h.at(1000));
    assert!(
        h.actions()
            .iter()
            .all(|a| !matches!(a, Action::Connect { .. }))
    );
    assert_eq!(h.driver.poll_timeout(), Some(h.at(1100)));
    h.driver.on_timer(h.at(1050));
    assert!(h.actions().is_empty(), "nothing happens early");
    h.driver.on_timer(h.at(1100));
    let (next, _) = Harness::connect_of(&h.actions());
    // The server is busy and asks for 2 s: the next attempt waits at least that (spread by
    // half of it with the fraction 0.5), on the other server.
    h.driver.on_open(next, handshake::SUBPROTOCOL, h.at(1200));
    let busy = refusal_answer(
        CloseReason::ServerBusy,
        "later",
        Some(Duration::from_secs(2)),
    );
    h.driver.on_message(next, &busy, h.at(1200));
    assert!(
        h.actions()
            .iter()
            .any(|a| *a == Action::Disconnect { conn: next })
    );
    assert_eq!(h.driver.poll_timeout(), Some(h.at(1200 + 3000)));
    h.driver.on_timer(h.at(4200));
    let url = h.actions().into_iter().find_map(|a| match a {
        Action::Connect { url, .. } => Some(url),
        _ => None,
    });
    assert_eq!(url.as_deref(), Some("ws://b"));
}

#[test]
fn refusals_arrive_in_band_and_a_final_one_ends_the_recovery() {
    let mut h = Harness::new(Strategy::External, &["ws://a"]);
    let conn = h.open();
    h.driver.on_close(conn, h.at(1));
    let (attempt, _) = attempt_of(&h.actions());
    h.driver.start(attempt, h.at(2));
    let (next, _) = Harness::connect_of(&h.actions());
    h.driver.on_open(next, handshake::SUBPROTOCOL, h.at(3));
    let gone = refusal_answer(CloseReason::UnknownSession, "expired", None);
    h.driver.on_message(next, &gone, h.at(3));
    assert_eq!(
        Harness::states(&h.actions()),
        [(
            SessionState::ClosedFailed,
            Some(CloseReason::UnknownSession)
        )]
    );
}

#[test]
fn opening_fails_with_the_servers_reason_or_a_handshake_error() {
    let mut h = Harness::new(Strategy::External, &["ws://a"]);
    let (conn, _) = Harness::connect_of(&h.actions());
    h.driver.on_open(conn, handshake::SUBPROTOCOL, h.at(1));
    let refused = refusal_answer(CloseReason::AuthenticationFailed, "no", None);
    h.driver.on_message(conn, &refused, h.at(1));
    assert_eq!(
        Harness::states(&h.actions()),
        [(
            SessionState::ClosedFailed,
            Some(CloseReason::AuthenticationFailed)
        )]
    );
    assert_eq!(
        h.driver.open_failure().map(|f| f.code),
        Some("authentication_failed")
    );

    // A server that does not select the carrier (not Tether, or an older one).
    let mut h = Harness::new(Strategy::External, &["ws://a"]);
    let (conn, _) = Harness::connect_of(&h.actions());
    h.driver.on_open(conn, "", h.at(1));
    assert_eq!(
        Harness::states(&h.actions()),
        [(
            SessionState::ClosedFailed,
            Some(CloseReason::HandshakeError)
        )]
    );
}

#[test]
fn close_waits_for_the_server_while_connected_and_is_immediate_while_recovering() {
    let mut h = Harness::new(Strategy::External, &["ws://a"]);
    let conn = h.open();
    h.driver.publish("a/b", b"1", h.at(1)).expect("queued");
    h.driver.close(h.at(1));
    // The publish, then the close frame; the session stays open until the server confirms
    // and hangs up.
    assert_eq!(sends(&h.actions()), 2);
    assert_eq!(
        h.driver.publish("a/b", b"2", h.at(2)).map_err(|f| f.code),
        Err("session_closed")
    );
    assert_eq!(h.driver.poll_timeout(), Some(h.at(5001)));
    h.driver.on_close(conn, h.at(3));
    assert_eq!(
        Harness::states(&h.actions()),
        [(
            SessionState::ClosedByClient,
            Some(CloseReason::ClosedByClient)
        )]
    );

    let mut h = Harness::new(Strategy::External, &["ws://a"]);
    let conn = h.open();
    h.driver.on_close(conn, h.at(1));
    let _ = h.actions();
    h.driver.close(h.at(2));
    assert_eq!(
        Harness::states(&h.actions()),
        [(
            SessionState::ClosedByClient,
            Some(CloseReason::ClosedByClient)
        )]
    );
}

#[test]
fn settings_are_checked() {
    let config = |principal: Option<&str>, credentials: Option<&str>| Config {
        urls: vec!["ws://a".into()],
        principal: principal.map(Into::into),
        credentials: credentials.map(Into::into),
        reconnect_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        close_timeout: Duration::from_secs(1),
        strategy: Strategy::External,
    };
    let code = |c| {
        Driver::new(c, Instant::now(), Box::new(|| 0.0))
            .err()
            .map(|f| f.code)
    };
    assert_eq!(code(config(None, Some("x"))), Some("invalid_argument"));
    assert_eq!(code(config(Some("né"), None)), Some("invalid_argument"));
    assert_eq!(code(config(Some("a"), Some("b"))), None);
}

#[test]
fn random_fractions_scale_into_the_range() {
    assert_eq!(scale(0.0, 10, 20), 10);
    assert_eq!(scale(0.999_999, 10, 20), 20);
    assert_eq!(scale(1.0, 10, 20), 20);
    assert_eq!(scale(0.5, 0, 1), 1);
}
