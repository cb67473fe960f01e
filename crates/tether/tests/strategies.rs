//! Strategy unit tests on the virtual clock: no network, no sleeping.

use std::sync::Arc;
use std::time::Duration;

use tether::CloseReason;
use tether::strategy::{
    AbortImmediately, ConstantDelay, ExponentialBackoff, Jitter, ReconnectionAttempt,
    ReconnectionStrategy, default_backoff,
};
use tether::testing::{End, Outcome, StrategyHarness};

const FAIL: Outcome = Outcome::Fail(CloseReason::ConnectionError);
const MS: fn(u64) -> Duration = Duration::from_millis;

fn delays(strategy: Arc<dyn ReconnectionStrategy>, failures: usize) -> Vec<Duration> {
    let report =
        StrategyHarness::new(strategy, Duration::from_secs(3600)).run(vec![FAIL; failures]);
    assert_eq!(report.end, End::Reconnected);
    assert_eq!(report.failures as usize, failures);
    assert_eq!(report.successes, 1);
    report.attempts.iter().map(|a| a.delay).collect()
}

#[test]
fn exponential_without_jitter_doubles_up_to_the_cap() {
    let s = ExponentialBackoff::new(MS(100), 2.0, MS(1000)).jitter(Jitter::None);
    assert_eq!(
        delays(s.into_strategy(), 6),
        [
            MS(100),
            MS(200),
            MS(400),
            MS(800),
            MS(1000),
            MS(1000),
            MS(1000)
        ]
    );
    let s = ExponentialBackoff::new(MS(10), 3.0, Duration::from_secs(60)).jitter(Jitter::None);
    assert_eq!(
        delays(s.into_strategy(), 3),
        [MS(10), MS(30), MS(90), MS(270)]
    );
}

#[test]
fn full_jitter_stays_within_zero_and_the_exponential_delay() {
    for seed in 0..20 {
        let s = ExponentialBackoff::new(MS(100), 2.0, MS(1000))
            .jitter(Jitter::Full)
            .seed(seed);
        for (i, d) in delays(s.into_strategy(), 7).into_iter().enumerate() {
            let cap = MS(100 * (1 << i)).min(MS(1000));
            assert!(d <= cap, "attempt {}: {d:?} > {cap:?}", i + 1);
        }
    }
    // Jitter actually spreads: not every seed gives the same first delay.
    let firsts: std::collections::HashSet<_> = (0..20)
        .map(|seed| {
            delays(
                ExponentialBackoff::new(MS(100), 2.0, MS(1000))
                    .seed(seed)
                    .into_strategy(),
                0,
            )[0]
        })
        .collect();
    assert!(firsts.len() > 10);
}

#[test]
fn equal_jitter_stays_within_half_and_all_of_the_delay() {
    for seed in 0..20 {
        let s = ExponentialBackoff::new(MS(100), 2.0, MS(1000))
            .jitter(Jitter::Equal)
            .seed(seed);
        for (i, d) in delays(s.into_strategy(), 7).into_iter().enumerate() {
            let full = MS(100 * (1 << i)).min(MS(1000));
            assert!(
                d >= full / 2 && d <= full,
                "attempt {}: {d:?} outside [{:?}, {full:?}]",
                i + 1,
                full / 2
            );
        }
    }
}

#[test]
fn decorrelated_jitter_stays_between_the_base_and_three_times_the_previous_capped() {
    for seed in 0..20 {
        let s = ExponentialBackoff::new(MS(100), 2.0, MS(2000))
            .jitter(Jitter::Decorrelated)
            .seed(seed);
        let mut previous = MS(100);
        for d in delays(s.into_strategy(), 10) {
            assert!(d >= MS(100), "{d:?} below the base");
            assert!(
                d <= (previous * 3).min(MS(2000)),
                "{d:?} above min(3 × {previous:?}, cap)"
            );
            previous = d;
        }
    }
}

#[test]
fn max_attempts_aborts_after_that_many_failures() {
    let s = ExponentialBackoff::new(MS(100), 2.0, MS(1000))
        .jitter(Jitter::None)
        .max_attempts(3);
    let report =
        StrategyHarness::new(s.into_strategy(), Duration::from_secs(3600)).run(vec![FAIL; 10]);
    assert_eq!(report.end, End::Aborted);
    assert_eq!(report.attempts.len(), 3);
    assert_eq!(report.failures, 3);
    let s = ConstantDelay::new(MS(5)).max_attempts(2);
    let report =
        StrategyHarness::new(s.into_strategy(), Duration::from_secs(3600)).run(vec![FAIL; 10]);
    assert_eq!((report.end, report.attempts.len()), (End::Aborted, 2));
}

#[test]
fn the_default_strategy_tries_fast_first_then_backs_off_with_full_jitter_to_ten_seconds() {
    for seed in 0..20 {
        let d = delays(default_backoff().seed(seed).into_strategy(), 10);
        assert!(
            d[0] <= MS(100),
            "first attempt within 100 ms, got {:?}",
            d[0]
        );
        for (i, delay) in d.iter().enumerate().skip(1) {
            let cap = MS(250 * (1 << (i - 1))).min(Duration::from_secs(10));
            assert!(*delay <= cap, "attempt {}: {delay:?} > {cap:?}", i + 1);
        }
    }
}

#[test]
fn the_timeout_closes_whatever_the_strategy_does() {
    // Never decides.
    let never = |_a: ReconnectionAttempt| {};
    let report = StrategyHarness::new(Arc::new(never), MS(5000)).run([]);
    assert_eq!(report.end, End::TimedOut);
    assert_eq!(report.elapsed, MS(5000));
    // Keeps failing: attempts at 0, 1 s, 2 s, ... until the timeout.
    let report = StrategyHarness::new(ConstantDelay::new(MS(1000)).into_strategy(), MS(3500))
        .run(vec![FAIL; 100]);
    assert_eq!(report.end, End::TimedOut);
    assert_eq!(report.attempts.len(), 3);
    assert_eq!(report.attempts.last().map(|a| a.at), Some(MS(3000)));
    assert!(report.elapsed >= MS(3500));
}

#[test]
fn facts_reach_the_strategy() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let strategy = move |a: ReconnectionAttempt| {
        record.lock().expect("lock").push((
            a.number(),
            a.elapsed(),
            a.remaining(),
            a.last_reason(),
        ));
        a.start_after(MS(250));
    };
    let report = StrategyHarness::new(Arc::new(strategy), Duration::from_secs(10))
        .disconnected_because(CloseReason::IdleConnection)
        .run([FAIL, Outcome::Fail(CloseReason::TransportError)]);
    assert_eq!(report.end, End::Reconnected);
    assert_eq!(
        *seen.lock().expect("lock"),
        vec![
            (1, MS(0), MS(10_000), CloseReason::IdleConnection),
            (2, MS(250), MS(9_750), CloseReason::ConnectionError),
            (3, MS(500), MS(9_500), CloseReason::TransportError),
        ]
    );
}

#[test]
fn a_final_failure_ends_recovery_and_abort_immediately_aborts() {
    let report = StrategyHarness::new(ConstantDelay::new(MS(0)).into_strategy(), MS(1000))
        .run([Outcome::Fail(CloseReason::UnknownSession)]);
    assert_eq!(report.end, End::Failed(CloseReason::UnknownSession));
    let report = StrategyHarness::new(Arc::new(AbortImmediately), MS(1000)).run([]);
    assert_eq!((report.end, report.attempts.len()), (End::Aborted, 0));
}

#[test]
fn a_server_retry_after_hint_is_honoured_and_spread_by_the_built_ins() {
    // 10,000 sessions a draining server sent away must not all come back in one millisecond:
    // each waits at least the hint, spread over [hint, 2 × hint).
    let hint = MS(1000);
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..50 {
        let report = StrategyHarness::new(tether::strategy::default_strategy(), MS(60_000))
            .sent_away(CloseReason::ServerDraining, hint)
            .run([]);
        assert_eq!(report.end, End::Reconnected);
        let first = report.attempts[0].delay;
        assert!(first >= hint && first < hint * 2, "{first:?}");
        firsts.insert(first);
    }
    assert!(firsts.len() > 10, "the returns are spread: {firsts:?}");
    // A busy server's hint on a failed attempt counts the same way, with any built-in.
    let report = StrategyHarness::new(ConstantDelay::new(MS(10)).into_strategy(), MS(60_000))
        .run([Outcome::RetryAfter(CloseReason::ServerBusy, MS(500))]);
    assert_eq!(report.end, End::Reconnected);
    assert_eq!(
        report.attempts[0].delay,
        MS(10),
        "no hint for the first attempt"
    );
    let second = report.attempts[1].delay;
    assert!(second >= MS(500) && second < MS(1000), "{second:?}");
}

#[test]
fn a_strategy_sees_the_reason_and_the_hint() {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let record = seen.clone();
    let strategy = move |attempt: ReconnectionAttempt| {
        *record.lock().expect("seen") = Some((attempt.last_reason(), attempt.retry_after()));
        attempt.start();
    };
    StrategyHarness::new(Arc::new(strategy), MS(5000))
        .sent_away(CloseReason::ServerDraining, MS(750))
        .run([]);
    assert_eq!(
        *seen.lock().expect("seen"),
        Some((CloseReason::ServerDraining, Some(MS(750))))
    );
}
