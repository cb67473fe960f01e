//! The built-in reconnection strategies' delays, sans I/O: constant delay, exponential backoff
//! with jitter, and the server's retry-after hint.
//!
//! Only the arithmetic lives here; randomness comes in as an argument (a [`Random`]), as time
//! does elsewhere in this crate, so that every client computes the same schedule: the Rust
//! client (`tether::strategy`, with `rand`) and the browser client (WebAssembly, with the
//! page's random numbers) alike.

use std::time::Duration;

/// A source of uniform random integers.
pub trait Random {
    /// A uniform integer in `low..=high` (`low < high`).
    fn uniform_inclusive(&mut self, low: u64, high: u64) -> u64;
}

impl<F: FnMut(u64, u64) -> u64> Random for F {
    fn uniform_inclusive(&mut self, low: u64, high: u64) -> u64 {
        self(low, high)
    }
}

/// A uniform duration in `[low, high]` (`low` when the range is empty).
pub fn uniform(rng: &mut impl Random, low: Duration, high: Duration) -> Duration {
    if high <= low {
        return low;
    }
    Duration::from_nanos(rng.uniform_inclusive(low.as_nanos() as u64, high.as_nanos() as u64))
}

/// The delay a strategy chose, made to respect the server's retry-after hint: at least the
/// hint, plus a uniform random share of it (`fraction()` in `[0, 1)`), so that the thousands of
/// sessions a draining server sends away come back spread over `[hint, 2 × hint)` rather than
/// in one millisecond.
pub fn honour_retry_after(
    delay: Duration,
    hint: Option<Duration>,
    fraction: impl FnOnce() -> f64,
) -> Duration {
    match hint {
        Some(hint) if !hint.is_zero() => delay.max(hint.mul_f64(1.0 + fraction())),
        _ => delay,
    }
}

/// The same delay every time, optionally at most `max_attempts` attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Constant {
    delay: Duration,
    max_attempts: Option<u32>,
}

impl Constant {
    /// A constant delay (zero is allowed: retry at once).
    pub fn new(delay: Duration) -> Self {
        Constant {
            delay,
            max_attempts: None,
        }
    }

    /// Abort instead of making attempt number `n + 1`.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// The delay before attempt `number` (1, 2, ...), or `None` to abort.
    pub fn next_delay(&self, number: u32) -> Option<Duration> {
        match self.max_attempts {
            Some(max) if number > max => None,
            _ => Some(self.delay),
        }
    }
}

/// How randomness spreads the delays of many clients (see "Exponential Backoff And Jitter",
/// AWS Architecture Blog).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly `min(cap, initial × multiplier^(n-1))`.
    None,
    /// Uniform in `[0, d]` where `d` is the un-jittered delay.
    Full,
    /// `d/2` plus uniform in `[0, d/2]`.
    Equal,
    /// Uniform in `[initial, previous × 3]`, capped.
    Decorrelated,
}

impl Jitter {
    /// Every mode.
    pub const ALL: [Jitter; 4] = [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ];

    /// Its stable name (`none`, `full`, `equal`, `decorrelated`): what every binding accepts
    /// and shows.
    pub fn name(self) -> &'static str {
        match self {
            Jitter::None => "none",
            Jitter::Full => "full",
            Jitter::Equal => "equal",
            Jitter::Decorrelated => "decorrelated",
        }
    }

    /// The mode named `name` ([`Jitter::name`]).
    pub fn from_name(name: &str) -> Option<Jitter> {
        Jitter::ALL.into_iter().find(|j| j.name() == name)
    }

    /// Every mode's name, for an error message: `none, full, equal or decorrelated`.
    pub fn names() -> String {
        let names: Vec<&str> = Jitter::ALL.iter().map(|j| j.name()).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        }
    }
}

impl Default for Jitter {
    /// [`Jitter::Full`].
    fn default() -> Self {
        Jitter::Full
    }
}

/// Exponential backoff with jitter, an optional attempt limit and an optional quick first
/// attempt. Keeps the previous delay (for [`Jitter::Decorrelated`]) until [`Backoff::reset`].
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    initial: Duration,
    multiplier: f64,
    max_delay: Duration,
    jitter: Jitter,
    max_attempts: Option<u32>,
    first_attempt: Option<Duration>,
    previous: Duration,
}

impl Default for Backoff {
    /// [`Backoff::DEFAULT_INITIAL`], [`Backoff::DEFAULT_MULTIPLIER`],
    /// [`Backoff::DEFAULT_MAX_DELAY`], full jitter, no attempt limit.
    fn default() -> Self {
        Backoff::new(
            Backoff::DEFAULT_INITIAL,
            Backoff::DEFAULT_MULTIPLIER,
            Backoff::DEFAULT_MAX_DELAY,
        )
    }
}

impl Backoff {
    /// The first delay when none is given: 250 ms.
    pub const DEFAULT_INITIAL: Duration = Duration::from_millis(250);
    /// The factor between delays when none is given: 2.
    pub const DEFAULT_MULTIPLIER: f64 = 2.0;
    /// The largest delay when none is given: 10 s.
    pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);

    /// Delays `initial`, `initial × multiplier`, ... capped at `max_delay`; full jitter. A
    /// multiplier below 1 (or not finite) is taken as 1; a cap below `initial` as `initial`.
    pub fn new(initial: Duration, multiplier: f64, max_delay: Duration) -> Self {
        let multiplier = if multiplier.is_finite() && multiplier >= 1.0 {
            multiplier
        } else {
            1.0
        };
        Backoff {
            initial,
            multiplier,
            max_delay: max_delay.max(initial),
            jitter: Jitter::Full,
            max_attempts: None,
            first_attempt: None,
            previous: initial,
        }
    }

    /// The default strategy's schedule: the first attempt after a random 0–100 ms (fast when
    /// the network blips), then full jitter from 250 ms, doubling, capped at 10 s (gentle on a
    /// restarting server).
    pub fn recommended() -> Self {
        Backoff::default().quick_first_attempt(Duration::from_millis(100))
    }

    /// The jitter mode.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Abort instead of making attempt number `n + 1`.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Make the first attempt after a uniform random delay in `[0, max]` (a blip usually heals
    /// at once), and back off from the second attempt on.
    pub fn quick_first_attempt(mut self, max: Duration) -> Self {
        self.first_attempt = Some(max);
        self
    }

    /// The un-jittered delay for backoff step `step` (0-based).
    fn base_delay(&self, step: u32) -> Duration {
        let factor = self.multiplier.powi(step.min(1024) as i32);
        let secs = self.initial.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= self.max_delay.as_secs_f64() {
            self.max_delay
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The delay before attempt `number` (1, 2, ...), or `None` to abort.
    pub fn next_delay(&mut self, number: u32, rng: &mut impl Random) -> Option<Duration> {
        if let Some(max) = self.max_attempts
            && number > max
        {
            return None;
        }
        let mut step = number.saturating_sub(1);
        if let Some(first) = self.first_attempt {
            if number <= 1 {
                return Some(uniform(rng, Duration::ZERO, first));
            }
            step -= 1;
        }
        let d = self.base_delay(step);
        let delay = match self.jitter {
            Jitter::None => d,
            Jitter::Full => uniform(rng, Duration::ZERO, d),
            Jitter::Equal => d / 2 + uniform(rng, Duration::ZERO, d / 2),
            Jitter::Decorrelated => {
                let high = (self.previous * 3).min(self.max_delay);
                let next = uniform(rng, self.initial, high).min(self.max_delay);
                self.previous = next;
                next
            }
        };
        Some(delay)
    }

    /// Forget the previous delay (after a successful reconnection).
    pub fn reset(&mut self) {
        self.previous = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Always the middle of the range.
    fn middle(low: u64, high: u64) -> u64 {
        low + (high - low) / 2
    }

    #[test]
    fn backoff_without_jitter_doubles_up_to_the_cap_and_stops_after_the_limit() {
        let mut b = Backoff::new(Duration::from_millis(100), 2.0, Duration::from_millis(500))
            .jitter(Jitter::None)
            .max_attempts(5);
        let delays: Vec<_> = (1..=6).map(|n| b.next_delay(n, &mut middle)).collect();
        let ms = |m| Some(Duration::from_millis(m));
        assert_eq!(delays, [ms(100), ms(200), ms(400), ms(500), ms(500), None]);
    }

    #[test]
    fn the_recommended_schedule_is_quick_first_then_full_jitter() {
        let mut b = Backoff::recommended();
        let ms = |m| Some(Duration::from_millis(m));
        assert_eq!(b.next_delay(1, &mut middle), ms(50));
        assert_eq!(b.next_delay(2, &mut middle), ms(125));
        assert_eq!(b.next_delay(3, &mut middle), ms(250));
        assert_eq!(b.next_delay(20, &mut middle), ms(5000));
    }

    #[test]
    fn decorrelated_jitter_stays_within_bounds_and_resets() {
        let initial = Duration::from_millis(100);
        let mut b = Backoff::new(initial, 2.0, Duration::from_secs(1)).jitter(Jitter::Decorrelated);
        let mut high = |_low: u64, high: u64| high;
        assert_eq!(b.next_delay(1, &mut high), Some(Duration::from_millis(300)));
        assert_eq!(b.next_delay(2, &mut high), Some(Duration::from_millis(900)));
        assert_eq!(b.next_delay(3, &mut high), Some(Duration::from_secs(1)));
        b.reset();
        assert_eq!(b.next_delay(4, &mut high), Some(Duration::from_millis(300)));
    }

    #[test]
    fn constant_delay_and_the_retry_after_hint() {
        let c = Constant::new(Duration::from_millis(10)).max_attempts(2);
        assert_eq!(c.next_delay(2), Some(Duration::from_millis(10)));
        assert_eq!(c.next_delay(3), None);
        let hint = Some(Duration::from_millis(700));
        let d = honour_retry_after(Duration::from_millis(10), hint, || 0.5);
        assert_eq!(d, Duration::from_millis(1050));
        let d = honour_retry_after(Duration::from_secs(2), hint, || 0.5);
        assert_eq!(d, Duration::from_secs(2));
        let d = honour_retry_after(Duration::from_millis(10), None, || unreachable!());
        assert_eq!(d, Duration::from_millis(10));
    }

    #[test]
    fn every_jitter_is_found_by_its_name_and_no_other_name_is() {
        for j in Jitter::ALL {
            assert_eq!(Jitter::from_name(j.name()), Some(j));
        }
        assert_eq!(Jitter::from_name("Full"), None);
        assert_eq!(Jitter::from_name(""), None);
        assert_eq!(Jitter::names(), "none, full, equal or decorrelated");
        assert_eq!(Jitter::default(), Jitter::Full);
    }
}
