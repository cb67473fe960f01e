//! The Rust runner of the conformance scenarios (`conformance/scenarios.txt`): every scenario
//! against the real server behind the fault proxy, with the core's own API. It writes
//! `target/conformance/rust.txt` for `cargo xtask conformance` and fails on any FAIL.
//!
//! `TETHER_CONFORMANCE_ONLY=<name>` runs the scenarios whose name contains it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tether::strategy::{
    AbortImmediately, AttemptInfo, ConstantDelay, ExponentialBackoff, Jitter, ReconnectionAttempt,
    ReconnectionStrategy, default_strategy,
};
use tether::{
    CloseReason, Completion, Error, GapReport, RequestErrorKind, Session, SessionListener,
    SessionState, StateChange,
};
use tether_conformance::fixture::{EnvInfo, Fixture, PASSWORD};
use tether_conformance::scenario::{self, Outcome, Scenario, Step};
use tokio::sync::{Notify, watch};

/// Bound on every wait; only a failing scenario reaches it.
const GUARD: Duration = Duration::from_secs(20);

/// The environment variable that makes this test binary the `exit_child` program.
const CHILD_URL: &str = "TETHER_CONFORMANCE_CHILD_URL";

#[derive(Default)]
struct Events {
    changes: Vec<StateChange>,
    gaps: Vec<GapReport>,
    attempts: Vec<ReconnectionAttempt>,
    successes: u32,
    failures: u32,
    updates: HashMap<String, Vec<String>>,
}

/// What the session's callbacks saw, and a version bumped on every change to wait on.
struct Shared {
    events: Mutex<Events>,
    version: watch::Sender<u64>,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            events: Mutex::new(Events::default()),
            version: watch::Sender::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Events> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Events)) {
        f(&mut self.lock());
        self.version.send_modify(|v| *v += 1);
    }

    /// Waits until `check` gives a value; fails with `what` past the guard.
    async fn wait<T>(
        &self,
        what: &str,
        mut check: impl FnMut(&Events) -> Option<T>,
    ) -> Result<T, Failure> {
        let mut rx = self.version.subscribe();
        let waited = tokio::time::timeout(GUARD, async {
            loop {
                rx.borrow_and_update();
                if let Some(t) = check(&self.lock()) {
                    return t;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        waited.map_err(|_| Failure::Fail(format!("timed out waiting for {what}")))
    }
}

/// The runner's strategy: hands every attempt to the steps, counts the hooks.
struct Manual(Arc<Shared>);

impl ReconnectionStrategy for Manual {
    fn perform_reconnection(&self, attempt: ReconnectionAttempt) {
        self.0.update(|e| e.attempts.push(attempt));
    }
    fn on_success(&self, _attempt: &AttemptInfo) {
        self.0.update(|e| e.successes += 1);
    }
    fn on_failure(&self, _attempt: &AttemptInfo, _reason: CloseReason) {
        self.0.update(|e| e.failures += 1);
    }
}

struct Recorder(Arc<Shared>);

impl SessionListener for Recorder {
    fn on_state_changed(&self, change: &StateChange) {
        if change.old != SessionState::Connecting {
            self.0.update(|e| e.changes.push(*change));
        }
    }
    fn on_gap(&self, report: &GapReport) {
        let report = report.clone();
        self.0.update(|e| e.gaps.push(report));
    }
}

enum Failure {
    Fail(String),
}

type StepResult = Result<(), Failure>;

fn fail<T>(message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure::Fail(message.into()))
}

/// The name of an error, as the scenario file spells expectations.
fn error_name(e: &Error) -> String {
    match e {
        Error::Rejected(r) => r.kind.as_str().to_owned(),
        Error::InvalidTopic(_) => RequestErrorKind::InvalidTopic.as_str().to_owned(),
        Error::Closed { .. } => "closed".into(),
        Error::OutcomeUnknown { .. } => "outcome_unknown".into(),
        Error::QueueFull(_) => "queue_full".into(),
        other => format!("other ({other})"),
    }
}

fn outcome_name(r: &Result<(), Error>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => error_name(e),
    }
}

struct Runner<'a> {
    fixture: &'a Fixture,
    env: Option<EnvInfo>,
    shared: Arc<Shared>,
    session: Option<Session>,
    state_cursor: usize,
    timeout: Duration,
    last_elapsed: Duration,
    sends: HashMap<String, Completion>,
    gates: HashMap<String, Arc<Notify>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

fn number(step: &Step, key: &str) -> Result<Option<u64>, Failure> {
    match step.get(key) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| Failure::Fail(format!("{key}={v} is not a number"))),
    }
}

fn required<'s>(step: &'s Step, key: &str) -> Result<&'s str, Failure> {
    step.get(key)
        .ok_or_else(|| Failure::Fail(format!("{key} is missing")))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The keys each verb takes.
fn keys(verb: &str) -> Option<&'static [&'static str]> {
    Some(match verb {
        "env" => &["recovery", "ping_ms", "tls", "drain", "retry_after_ms"],
        "open" => &[
            "principal",
            "timeout_ms",
            "strategy",
            "delay_ms",
            "max_attempts",
            "initial_ms",
            "max_ms",
            "jitter",
            "strict",
            "queue",
            "close_timeout_ms",
            "ping_ms",
            "delivery_limit",
            "ca",
            "expect",
        ],
        "subscribe" => &["topic", "consumer"],
        "resume_consumer" => &["topic"],
        "publish" => &["topic", "value", "expect"],
        "send" => &["topic", "value", "as", "expect"],
        "await_send" => &["name", "expect"],
        "server_publish" => &["topic", "value", "count"],
        "expect_received" => &["topic", "count", "last"],
        "cut" => &["mode"],
        "stall" | "refuse" | "heal" | "drain" | "close" | "exit_child" => &[],
        "expect_state" => &["state", "reason"],
        "wait_state" => &["state"],
        "expect_attempt" => &["number", "last_reason", "retry_after"],
        "decide" => &["action", "from"],
        "expect_hooks" => &["success", "failure"],
        "expect_gap" => &["topic"],
        "expect_ping_period" => &["ms"],
        "expect_proxy" => &["refused"],
        "expect_closed" => &["state", "reason"],
        _ => return None,
    })
}

impl<'a> Runner<'a> {
    fn new(fixture: &'a Fixture) -> Self {
        Runner {
            fixture,
            env: None,
            shared: Shared::new(),
            session: None,
            state_cursor: 0,
            timeout: Duration::from_secs(60),
            last_elapsed: Duration::ZERO,
            sends: HashMap::new(),
            gates: HashMap::new(),
            readers: Vec::new(),
        }
    }

    fn session(&self) -> Result<&Session, Failure> {
        self.session
            .as_ref()
            .ok_or_else(|| Failure::Fail("no session: `open` first".into()))
    }

    fn env(&self) -> Result<&EnvInfo, Failure> {
        self.env
            .as_ref()
            .ok_or_else(|| Failure::Fail("no environment: `env` first".into()))
    }

    async fn finish(&mut self) {
        if let Some(s) = self.session.take() {
            s.close().await;
        }
        for r in self.readers.drain(..) {
            r.abort();
        }
    }

    async fn step(&mut self, step: &Step) -> StepResult {
        let Some(allowed) = keys(&step.verb) else {
            return fail(format!("unknown step {}", step.verb));
        };
        if let Some(k) = step.args.keys().find(|k| !allowed.contains(&k.as_str())) {
            return fail(format!("{}: unknown key {k}", step.verb));
        }
        let fixture = |r: Result<(), tether_conformance::fixture::FixtureError>| {
            r.map_err(|e| Failure::Fail(format!("fixture: {e}")))
        };
        match step.verb.as_str() {
            "env" => {
                let info = self
                    .fixture
                    .env(&step.args)
                    .await
                    .map_err(|e| Failure::Fail(format!("fixture: {e}")))?;
                self.env = Some(info);
                Ok(())
            }
            "open" => self.open(step).await,
            "subscribe" => self.subscribe(step).await,
            "resume_consumer" => {
                let topic = required(step, "topic")?;
                match self.gates.get(topic) {
                    Some(gate) => {
                        gate.notify_one();
                        Ok(())
                    }
                    None => fail(format!("{topic} has no paused consumer")),
                }
            }
            "publish" => {
                let session = self.session()?;
                let got = session
                    .publish(
                        required(step, "topic")?,
                        required(step, "value")?.to_owned(),
                    )
                    .await;
                expect_outcome(step, &outcome_name(&got))
            }
            "send" => {
                let session = self.session()?;
                let got = session.send(
                    required(step, "topic")?,
                    required(step, "value")?.to_owned(),
                );
                let name = match &got {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => error_name(e),
                };
                expect_outcome(step, &name)?;
                if let (Ok(completion), Some(key)) = (got, step.get("as")) {
                    self.sends.insert(key.to_owned(), completion);
                }
                Ok(())
            }
            "await_send" => {
                let name = required(step, "name")?;
                let Some(completion) = self.sends.remove(name) else {
                    return fail(format!("no send named {name}"));
                };
                let got = tokio::time::timeout(GUARD, completion)
                    .await
                    .map_err(|_| Failure::Fail(format!("timed out waiting for send {name}")))?;
                expect_outcome(step, &outcome_name(&got))
            }
            "server_publish" => fixture(
                self.fixture
                    .publish(
                        required(step, "topic")?,
                        required(step, "value")?,
                        number(step, "count")?.unwrap_or(1),
                    )
                    .await,
            ),
            "expect_received" => {
                let topic = required(step, "topic")?.to_owned();
                let count = number(step, "count")?.unwrap_or(1) as usize;
                let last = step.get("last").map(str::to_owned);
                self.shared
                    .wait(
                        &format!("{count} update(s) of {topic}, the last {last:?}"),
                        |e| {
                            let got = e.updates.get(&topic)?;
                            (got.len() >= count
                                && last.as_ref().is_none_or(|l| got.last() == Some(l)))
                            .then_some(())
                        },
                    )
                    .await
            }
            "cut" => fixture(
                self.fixture
                    .cut(step.get("mode").unwrap_or("rst"))
                    .await
                    .map(|_| ()),
            ),
            "stall" => fixture(self.fixture.stall().await.map(|_| ())),
            "refuse" => fixture(self.fixture.refuse().await),
            "heal" => fixture(self.fixture.heal().await),
            "drain" => fixture(self.fixture.drain().await),
            "expect_state" => {
                let want = required(step, "state")?;
                let Some(want) = SessionState::from_name(want) else {
                    return fail(format!("no state {want}"));
                };
                let from = self.state_cursor;
                let (at, change) = self
                    .shared
                    .wait(&format!("the session to enter {want}"), |e| {
                        e.changes
                            .iter()
                            .enumerate()
                            .skip(from)
                            .find(|(_, c)| c.new == want)
                            .map(|(i, c)| (i, *c))
                    })
                    .await?;
                self.state_cursor = at + 1;
                if let Some(reason) = step.get("reason") {
                    let got = change.reason.map(CloseReason::as_str);
                    if got != Some(reason) {
                        return fail(format!("entered {want} with reason {got:?}, not {reason}"));
                    }
                }
                Ok(())
            }
            "wait_state" => {
                let want = required(step, "state")?;
                let Some(want) = SessionState::from_name(want) else {
                    return fail(format!("no state {want}"));
                };
                let got = tokio::time::timeout(GUARD, self.session()?.wait_for_state(want))
                    .await
                    .map_err(|_| Failure::Fail(format!("timed out waiting for {want}")))?;
                if got != want {
                    return fail(format!("reached {got}, not {want}"));
                }
                Ok(())
            }
            "expect_attempt" => self.expect_attempt(step).await,
            "decide" => {
                let attempt = self.shared.lock().attempts.last().cloned();
                let Some(attempt) = attempt else {
                    return fail("no attempt to decide");
                };
                let start = match required(step, "action")? {
                    "start" => true,
                    "abort" => false,
                    other => return fail(format!("action={other}")),
                };
                let decide = move || {
                    if start {
                        attempt.start()
                    } else {
                        attempt.abort()
                    }
                };
                let decided = match step.get("from") {
                    Some("thread") => std::thread::spawn(decide)
                        .join()
                        .map_err(|_| Failure::Fail("the deciding thread panicked".into()))?,
                    None => decide(),
                    Some(other) => return fail(format!("from={other}")),
                };
                if decided {
                    Ok(())
                } else {
                    fail("the attempt was already decided (or the session stopped waiting)")
                }
            }
            "expect_hooks" => {
                let success = number(step, "success")?.unwrap_or(0) as u32;
                let failure = number(step, "failure")?.unwrap_or(0) as u32;
                let (s, f) = self
                    .shared
                    .wait(
                        &format!("{success} success and {failure} failure hook call(s)"),
                        |e| {
                            (e.successes >= success && e.failures >= failure)
                                .then_some((e.successes, e.failures))
                        },
                    )
                    .await?;
                if (s, f) != (success, failure) {
                    return fail(format!(
                        "hooks: {s} success, {f} failure; expected {success}, {failure}"
                    ));
                }
                Ok(())
            }
            "expect_gap" => {
                let topic = required(step, "topic")?.to_owned();
                self.shared
                    .wait(&format!("a gap report naming {topic}"), |e| {
                        e.gaps
                            .iter()
                            .any(|g| {
                                g.lost_count() > 0 && g.topics.iter().any(|(t, _)| *t == topic)
                            })
                            .then_some(())
                    })
                    .await
            }
            "expect_ping_period" => {
                let want = number(step, "ms")?.map(ms);
                let got = self.session()?.ping_period();
                if got != want {
                    return fail(format!("ping period {got:?}, expected {want:?}"));
                }
                Ok(())
            }
            "expect_proxy" => {
                let n = number(step, "refused")?.unwrap_or(0);
                fixture(self.fixture.wait_refused(n).await)
            }
            "close" => {
                let session = self.session()?;
                tokio::time::timeout(GUARD, session.close())
                    .await
                    .map_err(|_| Failure::Fail("timed out closing".into()))
            }
            "expect_closed" => {
                let session = self.session()?;
                let reason = tokio::time::timeout(GUARD, session.closed())
                    .await
                    .map_err(|_| {
                        Failure::Fail("timed out waiting for the session to close".into())
                    })?;
                let state = session.state();
                let (want_state, want_reason) =
                    (required(step, "state")?, required(step, "reason")?);
                if state.as_str() != want_state || reason.as_str() != want_reason {
                    return fail(format!(
                        "closed in {state} ({reason}), expected {want_state} ({want_reason})"
                    ));
                }
                Ok(())
            }
            "exit_child" => self.exit_child().await,
            other => fail(format!("unknown step {other}")),
        }
    }

    async fn open(&mut self, step: &Step) -> StepResult {
        let env = self.env()?.clone();
        let mut b = Session::builder(&env.url)
            .principal(step.get("principal").unwrap_or("control"))
            .password(PASSWORD)
            .listener(Recorder(self.shared.clone()));
        if let Some(t) = number(step, "timeout_ms")? {
            self.timeout = ms(t);
            b = b.reconnection_timeout(ms(t));
        }
        let strategy: Option<Arc<dyn ReconnectionStrategy>> = match step.get("strategy") {
            None => None,
            Some("manual") => Some(Arc::new(Manual(self.shared.clone()))),
            Some("default") => Some(default_strategy()),
            Some("constant") => {
                let mut s = ConstantDelay::new(ms(number(step, "delay_ms")?.unwrap_or(0)));
                if let Some(n) = number(step, "max_attempts")? {
                    s = s.max_attempts(n as u32);
                }
                Some(s.into_strategy())
            }
            Some("backoff") => {
                let jitter = match step.get("jitter").unwrap_or("full") {
                    "none" => Jitter::None,
                    "full" => Jitter::Full,
                    "equal" => Jitter::Equal,
                    "decorrelated" => Jitter::Decorrelated,
                    other => return fail(format!("jitter={other}")),
                };
                let mut s = ExponentialBackoff::new(
                    ms(number(step, "initial_ms")?.unwrap_or(250)),
                    2.0,
                    ms(number(step, "max_ms")?.unwrap_or(10_000)),
                )
                .jitter(jitter);
                if let Some(n) = number(step, "max_attempts")? {
                    s = s.max_attempts(n as u32);
                }
                Some(s.into_strategy())
            }
            Some("abort") => Some(Arc::new(AbortImmediately)),
            Some(other) => return fail(format!("strategy={other}")),
        };
        if let Some(s) = strategy {
            b = b.reconnection_strategy_arc(s);
        }
        if step.get("strict") == Some("1") {
            b = b.strict(true);
        }
        if let Some(n) = number(step, "queue")? {
            b = b.send_queue(n as usize, 8 << 20);
        }
        if let Some(t) = number(step, "close_timeout_ms")? {
            b = b.close_timeout(ms(t));
        }
        if let Some(t) = number(step, "ping_ms")? {
            b = b.ping_period(ms(t));
        }
        if let Some(n) = number(step, "delivery_limit")? {
            b = b.delivery_limit(n as usize);
        }
        match step.get("ca") {
            None | Some("none") => {}
            Some("fixture") => {
                let Some(file) = &env.ca_file else {
                    return fail("ca=fixture needs env tls=1");
                };
                let pem = std::fs::read(file)
                    .map_err(|e| Failure::Fail(format!("cannot read {}: {e}", file.display())))?;
                b = b.tls_root_certificate_pem(pem);
            }
            Some(other) => return fail(format!("ca={other}")),
        }
        let opened = tokio::time::timeout(GUARD, b.open())
            .await
            .map_err(|_| Failure::Fail("timed out opening".into()))?;
        match (opened, step.get("expect").unwrap_or("ok")) {
            (Ok(session), "ok") => {
                if let Some(old) = self.session.replace(session) {
                    old.close().await;
                }
                Ok(())
            }
            (Err(_), "error") => Ok(()),
            (Ok(session), _) => {
                session.close().await;
                fail("opened, but it should have failed")
            }
            (Err(e), _) => fail(format!("cannot open: {e}")),
        }
    }

    async fn subscribe(&mut self, step: &Step) -> StepResult {
        let topic = required(step, "topic")?.to_owned();
        let mut sub = self
            .session()?
            .subscribe(&topic)
            .await
            .map_err(|e| Failure::Fail(format!("subscribe {topic}: {e}")))?;
        let gate = match step.get("consumer") {
            None => None,
            Some("paused") => {
                let gate = Arc::new(Notify::new());
                self.gates.insert(topic.clone(), gate.clone());
                Some(gate)
            }
            Some(other) => return fail(format!("consumer={other}")),
        };
        let shared = self.shared.clone();
        self.readers.push(tokio::spawn(async move {
            if let Some(gate) = gate {
                gate.notified().await;
            }
            while let Some(update) = sub.next().await {
                let value = String::from_utf8_lossy(&update.value).into_owned();
                shared.update(|e| {
                    e.updates
                        .entry(update.topic.to_string())
                        .or_default()
                        .push(value);
                });
            }
        }));
        Ok(())
    }

    async fn expect_attempt(&mut self, step: &Step) -> StepResult {
        let n = number(step, "number")?.unwrap_or(1) as usize;
        let attempt = self
            .shared
            .wait(&format!("reconnection attempt {n}"), |e| {
                e.attempts.get(n.wrapping_sub(1)).cloned()
            })
            .await?;
        let info = attempt.info();
        let mut wrong = Vec::new();
        if info.number as usize != n {
            wrong.push(format!("number {}", info.number));
        }
        if let Some(r) = step.get("last_reason")
            && info.last_reason.as_str() != r
        {
            wrong.push(format!("last reason {}", info.last_reason));
        }
        match (step.get("retry_after"), info.retry_after) {
            (None, _) | (Some("none"), None) => {}
            (Some("none"), Some(d)) => wrong.push(format!("retry-after {d:?}, expected none")),
            (Some(want), got) => {
                if got.map(|d| d.as_millis().to_string()).as_deref() != Some(want) {
                    wrong.push(format!("retry-after {got:?}, expected {want} ms"));
                }
            }
        }
        if info.remaining.is_zero() || info.remaining > self.timeout {
            wrong.push(format!(
                "remaining {:?} (timeout {:?})",
                info.remaining, self.timeout
            ));
        }
        if info.elapsed < self.last_elapsed {
            wrong.push(format!(
                "elapsed {:?} went back from {:?}",
                info.elapsed, self.last_elapsed
            ));
        }
        self.last_elapsed = info.elapsed;
        if wrong.is_empty() {
            Ok(())
        } else {
            fail(format!("attempt {n}: {}", wrong.join(", ")))
        }
    }

    async fn exit_child(&mut self) -> StepResult {
        let url = self.env()?.url.clone();
        let exe = std::env::current_exe()
            .map_err(|e| Failure::Fail(format!("cannot find this test program: {e}")))?;
        let child = std::process::Command::new(exe)
            .args([
                "--exact",
                "exit_child_program",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_URL, url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| Failure::Fail(format!("cannot run the child: {e}")))?;
        let pid = child.id();
        let waited = tokio::time::timeout(
            GUARD,
            tokio::task::spawn_blocking(|| child.wait_with_output()),
        )
        .await;
        let out = match waited {
            Ok(Ok(Ok(out))) => out,
            Ok(Ok(Err(e))) => return fail(format!("waiting for the child: {e}")),
            Ok(Err(e)) => return fail(format!("waiting for the child: {e}")),
            Err(_) => {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                return fail("the child did not exit");
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains("done") {
            return fail(format!(
                "child: {}, stdout {stdout:?}, stderr {:?}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }
}

fn expect_outcome(step: &Step, got: &str) -> StepResult {
    let want = step.get("expect").unwrap_or("ok");
    if got == want {
        Ok(())
    } else {
        fail(format!("outcome {got}, expected {want}"))
    }
}

async fn run_scenario(fixture: &Fixture, scenario: &Scenario) -> Outcome {
    let mut runner = Runner::new(fixture);
    let mut outcome = Outcome::Pass;
    for step in &scenario.steps {
        if let Err(Failure::Fail(why)) = runner.step(step).await {
            outcome = Outcome::Fail(format!("{step}: {why}"));
            break;
        }
    }
    runner.finish().await;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_scenarios() {
    let scenarios = scenario::load(&scenario::default_path()).expect("scenarios.txt");
    let only = std::env::var("TETHER_CONFORMANCE_ONLY").ok();
    let fixture = Fixture::default();
    let mut lines = Vec::new();
    let mut failed = Vec::new();
    let mut results = BTreeMap::new();
    for s in &scenarios {
        if only.as_ref().is_some_and(|o| !s.name.contains(o.as_str())) {
            continue;
        }
        let outcome = run_scenario(&fixture, s).await;
        println!("{}", outcome.line(&s.name));
        if let Outcome::Fail(why) = &outcome {
            failed.push(format!("{}: {why}", s.name));
        }
        lines.push(outcome.line(&s.name));
        results.insert(s.name.clone(), outcome);
    }
    fixture.end().await;
    if only.is_none() {
        let dir = tether_conformance::results_dir();
        std::fs::create_dir_all(&dir).expect("results directory");
        std::fs::write(dir.join("rust.txt"), lines.join("\n") + "\n").expect("write results");
    }
    assert!(
        failed.is_empty(),
        "failed scenarios:\n{}",
        failed.join("\n")
    );
}

/// The `exit_child` program: does nothing unless the runner started it with a URL.
#[test]
fn exit_child_program() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let handle = tether::runtime::handle().expect("runtime");
    let session = handle.block_on(async {
        let session = Session::builder(&url)
            .principal("control")
            .password(PASSWORD)
            .open()
            .await
            .expect("open");
        let mut sub = session.subscribe("exit/t").await.expect("subscribe");
        session.publish("exit/t", "bye").await.expect("publish");
        let update = tokio::time::timeout(GUARD, sub.next())
            .await
            .expect("an update in time")
            .expect("an update");
        assert_eq!(update.value, "bye".as_bytes());
        session
    });
    println!("done");
    // Left open: no close, no shutdown.
    std::mem::forget(session);
}
