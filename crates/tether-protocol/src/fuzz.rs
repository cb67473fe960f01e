//! Fuzz targets and a small mutation fuzzer that runs them on stable Rust.
//!
//! Each target takes arbitrary bytes and must never panic; where the input decodes, it also
//! checks a property (encoding what was decoded gives it back). The cargo-fuzz targets in
//! `fuzz/` call these functions; the test suite runs them for a bounded number of inputs, and
//! `cargo xtask fuzz --seconds N` for as long as asked. Not part of the public API.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::client::{ClientSession, ClientSessionConfig};
use crate::frame::{
    self, ClientFrame, GapReport, RequestError, RequestErrorKind, ServerFrame, Update,
};
use crate::handshake::{ResumeToken, SessionAccepted, SessionId, SessionRequest};
use crate::server::ServerSession;
use crate::{BufferLimits, CloseReason, Position};

/// Decodes a client frame; a decoded frame must survive a round trip, and decoding it in
/// place (sharing the message's buffer) must give the same result.
pub fn client_frame(data: &[u8]) {
    let message = Bytes::copy_from_slice(data);
    let shared = frame::decode_client_in(&message, &message, &mut frame::TopicCache::default());
    let plain = frame::decode_client(data);
    assert_eq!(
        shared.as_ref().ok(),
        plain.as_ref().ok(),
        "client frame in place"
    );
    if let Ok(f) = plain {
        let again = frame::decode_client(&frame::encode_to_vec(&f));
        assert_eq!(again.as_ref(), Ok(&f), "client frame round trip");
    }
}

/// Decodes a server frame; a decoded frame must survive a round trip, and decoding it in
/// place (sharing the message's buffer) must give the same result.
pub fn server_frame(data: &[u8]) {
    let message = Bytes::copy_from_slice(data);
    let shared = frame::decode_server_in(&message, &message, &mut frame::TopicCache::default());
    let plain = frame::decode_server(data);
    assert_eq!(
        shared.as_ref().ok(),
        plain.as_ref().ok(),
        "server frame in place"
    );
    if let Ok(f) = plain {
        let again = frame::decode_server(&frame::encode_to_vec(&f));
        assert_eq!(again.as_ref(), Ok(&f), "server frame round trip");
    }
}

/// Reads `name: value` lines as upgrade headers, both ways; accepted ones must round-trip.
pub fn handshake(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let headers: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |name: &str| headers.get(name).map(String::as_str);
    if let Ok(request) = SessionRequest::from_headers(get) {
        let map: HashMap<&str, String> = request.to_headers().into_iter().collect();
        let again = SessionRequest::from_headers(|n| map.get(n).map(String::as_str));
        assert_eq!(again.as_ref(), Ok(&request), "request round trip");
    }
    if let Ok(accepted) = SessionAccepted::from_headers(get) {
        let map: HashMap<&str, String> = accepted.to_headers().into_iter().collect();
        let again = SessionAccepted::from_headers(|n| map.get(n).map(String::as_str));
        assert_eq!(again.as_ref(), Ok(&accepted), "response round trip");
    }
}

/// Feeds length-prefixed chunks to a connected client and server session, with timeouts in
/// between: whatever arrives, the machines answer with errors, never panics.
pub fn sessions(data: &[u8]) {
    let now = Instant::now();
    let accepted = SessionAccepted {
        session: SessionId::from_bytes([1; 16]),
        token: ResumeToken::from_bytes([2; 16]),
        reconnect_timeout: Duration::from_secs(60),
        ping_period: Duration::from_secs(1),
        received: 0,
        max_frame: 1 << 20,
        batch: false,
    };
    let mut client = ClientSession::new(ClientSessionConfig::default());
    let _ = client.connected(now, &accepted);
    let _ = client.publish("a", Bytes::from_static(b"x"));
    let mut server = ServerSession::new(
        BufferLimits {
            max_frames: 8,
            max_bytes: 4096,
        },
        Duration::from_secs(1),
    );
    server.opened(now);
    let mut rest = data;
    let mut t = now;
    while let Some((&len, tail)) = rest.split_first() {
        let take = usize::from(len).min(tail.len());
        let (chunk, next) = tail.split_at(take);
        rest = next;
        t += Duration::from_millis(u64::from(len) * 7);
        let _ = client.handle_frame(t, chunk);
        let _ = server.handle_frame(t, chunk);
        let _ = client.handle_timeout(t);
        let _ = server.handle_timeout(t);
        while client.poll_transmit(t).is_some() {}
        while server.poll_transmit(t).is_some() {}
        while client.poll_event().is_some() {}
        if len % 5 == 0 {
            client.disconnected();
            server.disconnected();
            let _ = server.resume(t, client.received());
            let _ = client.connected(
                t,
                &SessionAccepted {
                    received: server.applied(),
                    ..accepted.clone()
                },
            );
        }
    }
}

/// A fuzz target: arbitrary bytes in, no panic out.
pub type Target = fn(&[u8]);

/// The targets, by name.
pub const TARGETS: [(&str, Target); 4] = [
    ("client_frame", client_frame),
    ("server_frame", server_frame),
    ("handshake", handshake),
    ("sessions", sessions),
];

/// Valid inputs to start mutating from.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let update = Update {
        topic: "a/b".into(),
        value: Bytes::from_static(b"value"),
        position: Position {
            partition: 2,
            offset: 9,
        },
        snapshot: false,
    };
    let client = [
        ClientFrame::Subscribe {
            selector: "a/**".into(),
        },
        ClientFrame::Unsubscribe {
            selector: "a/*".into(),
        },
        ClientFrame::Publish {
            topic: "a/b".into(),
            value: Bytes::from_static(b"hello"),
        },
        ClientFrame::Ack { received: 300 },
        ClientFrame::Ping { received: 1 },
        ClientFrame::Close,
    ];
    let server = [
        ServerFrame::Update(update),
        ServerFrame::Rejected {
            request: 1,
            error: RequestError {
                kind: RequestErrorKind::AccessDenied,
                message: "no".into(),
            },
        },
        ServerFrame::Ack { received: 1 },
        ServerFrame::Ping { received: 0 },
        ServerFrame::Gap(GapReport {
            lost_from: 1,
            lost_to: 4,
            next: 5,
            topics: vec![("a/b".into(), 4)],
        }),
        ServerFrame::Close {
            reason: CloseReason::ClosedByServer,
            message: "bye".into(),
        },
        ServerFrame::GoAway {
            reason: CloseReason::ServerDraining,
            retry_after_ms: 1500,
            message: "restarting".into(),
        },
    ];
    let headers = |h: Vec<(&str, String)>| -> Vec<u8> {
        h.into_iter()
            .map(|(n, v)| format!("{n}: {v}\n"))
            .collect::<String>()
            .into_bytes()
    };
    match target {
        "client_frame" => client.iter().map(frame::encode_to_vec).collect(),
        "server_frame" => server.iter().map(frame::encode_to_vec).collect(),
        "handshake" => vec![
            headers(
                SessionRequest::Open {
                    principal: Some("p".into()),
                    credentials: Some("c".into()),
                    auth_token: None,
                    reconnect_timeout: Duration::from_secs(5),
                }
                .to_headers(),
            ),
            headers(
                SessionRequest::Resume {
                    session: SessionId::from_bytes([3; 16]),
                    token: ResumeToken::from_bytes([4; 16]),
                    received: 7,
                    positions: vec![Position {
                        partition: 1,
                        offset: 2,
                    }],
                    confirmed: 1,
                }
                .to_headers(),
            ),
        ],
        _ => {
            let mut stream = Vec::new();
            for f in server
                .iter()
                .map(frame::encode_to_vec)
                .chain(client.iter().map(frame::encode_to_vec))
            {
                stream.push(u8::try_from(f.len()).unwrap_or(u8::MAX));
                stream.extend_from_slice(&f);
            }
            vec![stream]
        }
    }
}

/// A xorshift generator: fast, reproducible, good enough to pick mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded (zero is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    /// Next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// One random mutation of `input` (bit flip, byte set, insert, delete, truncate, duplicate,
/// interesting values, or random bytes), as mutation fuzzers do.
pub fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = out.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next_u64() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                out.insert(i, rng.next_u64() as u8);
            }
            3 if len > 0 => {
                out.remove(rng.below(len));
            }
            4 => out.truncate(rng.below(len + 1)),
            5 if len > 0 => {
                let start = rng.below(len);
                let end = (start + rng.below(16)).min(len);
                let piece = out[start..end].to_vec();
                let at = rng.below(out.len() + 1);
                out.splice(at..at, piece);
            }
            6 if len > 0 => {
                let i = rng.below(len);
                out[i] = [0x00, 0x7f, 0x80, 0xff, 0xfe, 0x01][rng.below(6)];
            }
            _ => out = (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect(),
        }
    }
    out
}

/// Runs `target` on mutated seeds until `budget` inputs or `until`; returns inputs run.
pub fn run(target: &str, budget: u64, until: Option<Instant>, seed: u64) -> u64 {
    let Some((_, f)) = TARGETS.iter().find(|(n, _)| *n == target) else {
        return 0;
    };
    let seeds = seeds(target);
    let mut rng = Rng::new(seed);
    let mut runs = 0;
    for s in &seeds {
        f(s);
        runs += 1;
    }
    while runs < budget && until.is_none_or(|u| Instant::now() < u) {
        let pick = rng.below(seeds.len());
        let input = mutate(&mut rng, &seeds[pick]);
        f(&input);
        runs += 1;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounded fuzz run of the test suite: every target, mutated inputs, no panic.
    #[test]
    fn every_target_survives_a_bounded_fuzz_run() {
        for (name, _) in TARGETS {
            let runs = run(name, 20_000, None, 0x5eed ^ name.len() as u64);
            assert_eq!(runs, 20_000, "{name}");
        }
    }

    #[test]
    fn mutations_change_inputs() {
        let mut rng = Rng::new(7);
        let seed = vec![1, 2, 3, 4, 5];
        let changed = (0..100).filter(|_| mutate(&mut rng, &seed) != seed).count();
        assert!(changed > 80);
    }
}
