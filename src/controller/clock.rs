//! The controllers' clock: real time, or a time lapse for demos and staging clusters.
//!
//! A time lapse starts at a chosen instant (`--time-lapse-from`) and runs `speed` times faster
//! than real time (`--time-lapse-speed 86400`: one day per second). The engine is unchanged (it is
//! given `now`, as always); the controllers and the notifier read [`Clock::now`], and turn the
//! instants they wait for into real sleeps with [`Clock::real_until`], which divides by the speed.
//! Elapsed real time is measured with the monotonic clock, so a jump of the system clock is not
//! multiplied by the speed.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

use crate::engine::{FIRST_INSTANT, LAST_INSTANT};

const NANOS: i128 = 1_000_000_000;

/// Where the controllers read the time.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    Real,
    /// A time lapse (demos, staging): never the default.
    Lapse(TimeLapse),
}

/// Clock time that started at [`TimeLapse::from`] and runs [`TimeLapse::speed`] times faster than
/// real time.
#[derive(Clone, Debug)]
pub struct TimeLapse {
    from: DateTime<Utc>,
    speed: u32,
    started: Instant,
}

/// Why a time lapse can not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    #[error("the time-lapse speed must be at least 1 (clock seconds per real second)")]
    Speed,
}

impl TimeLapse {
    /// A time lapse reading `from` now, running `speed` times faster than real time.
    pub fn start(from: DateTime<Utc>, speed: u32) -> Result<Self, ClockError> {
        if speed == 0 {
            return Err(ClockError::Speed);
        }
        Ok(Self {
            from,
            speed,
            started: Instant::now(),
        })
    }

    /// The instant the lapse started from.
    pub fn from(&self) -> DateTime<Utc> {
        self.from
    }

    /// Clock seconds per real second.
    pub fn speed(&self) -> u32 {
        self.speed
    }

    /// Real time since the lapse started.
    pub fn real_elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// What the clock reads `real` after the start: `from + real × speed`, saturating at the
    /// ends of RFC 3339 time.
    pub fn at(&self, real: Duration) -> DateTime<Utc> {
        let from = i128::from(self.from.timestamp()) * NANOS
            + i128::from(self.from.timestamp_subsec_nanos());
        let lapsed = i128::try_from(real.as_nanos())
            .unwrap_or(i128::MAX / 2)
            .saturating_mul(i128::from(self.speed));
        let t = from.saturating_add(lapsed).clamp(
            i128::from(FIRST_INSTANT) * NANOS,
            i128::from(LAST_INSTANT) * NANOS,
        );
        let secs = i64::try_from(t.div_euclid(NANOS)).unwrap_or(LAST_INSTANT);
        let nanos = u32::try_from(t.rem_euclid(NANOS)).unwrap_or(0);
        DateTime::from_timestamp(secs, nanos).unwrap_or(self.from)
    }

    /// The real time a clock span takes: `span / speed`, rounded up (so that a sleep never ends
    /// before the clock reaches the instant); zero for a span that is not positive.
    pub fn real(&self, span: TimeDelta) -> Duration {
        let nanos = i128::from(span.num_seconds()) * NANOS + i128::from(span.subsec_nanos());
        if nanos <= 0 {
            return Duration::ZERO;
        }
        let speed = i128::from(self.speed);
        let real = (nanos + speed - 1) / speed;
        Duration::from_nanos(u64::try_from(real).unwrap_or(u64::MAX))
    }
}

impl Clock {
    /// A time lapse from `from` at `speed` clock seconds per real second.
    pub fn lapse(from: DateTime<Utc>, speed: u32) -> Result<Self, ClockError> {
        TimeLapse::start(from, speed).map(Self::Lapse)
    }

    /// The current time, as the controllers see it.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::Real => Utc::now(),
            Clock::Lapse(lapse) => lapse.at(lapse.real_elapsed()),
        }
    }

    /// How long to sleep (real time) from clock time `now` until the clock reads `t`; zero
    /// when `t` is not after `now`.
    pub fn real_until(&self, t: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
        self.real(t - now)
    }

    /// The real time a clock span takes (the span itself in real time).
    pub fn real(&self, span: TimeDelta) -> Duration {
        match self {
            Clock::Real => span.to_std().unwrap_or(Duration::ZERO),
            Clock::Lapse(lapse) => lapse.real(span),
        }
    }

    /// Clock seconds per real second: 1 for real time.
    pub fn speed(&self) -> u32 {
        match self {
            Clock::Real => 1,
            Clock::Lapse(lapse) => lapse.speed,
        }
    }

    pub fn is_lapse(&self) -> bool {
        matches!(self, Clock::Lapse(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test instant")
            .with_timezone(&Utc)
    }

    #[test]
    fn lapsed_now_runs_speed_times_faster() {
        let lapse = TimeLapse::start(at("2026-12-01T00:00:00Z"), 86_400).expect("lapse");
        // (real time since the start, what the clock reads)
        for (real, reads) in [
            (Duration::ZERO, "2026-12-01T00:00:00Z"),
            (Duration::from_secs(1), "2026-12-02T00:00:00Z"),
            (Duration::from_millis(500), "2026-12-01T12:00:00Z"),
            (Duration::from_secs(31), "2027-01-01T00:00:00Z"),
            (Duration::from_nanos(1), "2026-12-01T00:00:00.000086400Z"),
        ] {
            assert_eq!(lapse.at(real), at(reads), "{real:?}");
        }
        // Saturates at the end of RFC 3339 time instead of overflowing.
        assert_eq!(
            lapse.at(Duration::from_secs(u64::MAX)).timestamp(),
            LAST_INSTANT
        );
        let slow = TimeLapse::start(at("2026-12-01T00:00:00Z"), 1).expect("lapse");
        assert_eq!(slow.at(Duration::from_secs(90)), at("2026-12-01T00:01:30Z"));
    }

    #[test]
    fn real_time_until_a_lapsed_instant_divides_by_the_speed() {
        let clock = Clock::lapse(at("2026-12-01T00:00:00Z"), 86_400).expect("lapse");
        let now = at("2026-12-01T00:00:00Z");
        // (clock instant, real sleep until it)
        for (t, real) in [
            ("2026-12-11T00:00:00Z", Duration::from_secs(10)),
            ("2026-12-01T00:00:01Z", Duration::from_nanos(11_575)), // 1e9/86400, rounded up
            ("2026-12-01T12:00:00Z", Duration::from_millis(500)),
            ("2026-11-30T00:00:00Z", Duration::ZERO), // already past
            ("2026-12-01T00:00:00Z", Duration::ZERO),
        ] {
            assert_eq!(clock.real_until(at(t), now), real, "{t}");
        }
        // Rounded up: the clock has reached the instant when the sleep ends.
        let lapse = TimeLapse::start(now, 7).expect("lapse");
        for nanos in [1i64, 6, 7, 8, 1_000_000_001] {
            let sleep = lapse.real(TimeDelta::nanoseconds(nanos));
            assert!(
                lapse.at(sleep) >= now + TimeDelta::nanoseconds(nanos),
                "{nanos}"
            );
        }
        // Real time: unchanged.
        assert_eq!(
            Clock::Real.real_until(at("2026-12-11T00:00:00Z"), now),
            Duration::from_secs(864_000)
        );
        assert_eq!(Clock::Real.speed(), 1);
        assert_eq!(clock.speed(), 86_400);
    }

    #[test]
    fn a_lapse_needs_a_positive_speed_and_reads_from_its_start() {
        assert_eq!(
            Clock::lapse(at("2026-12-01T00:00:00Z"), 0).err(),
            Some(ClockError::Speed)
        );
        let clock = Clock::lapse(at("2026-12-01T00:00:00Z"), 86_400).expect("lapse");
        let now = clock.now();
        assert!(now >= at("2026-12-01T00:00:00Z"), "{now}");
        // Less than a few real seconds have passed in this test.
        assert!(now < at("2026-12-06T00:00:00Z"), "{now}");
        assert!(clock.is_lapse() && !Clock::Real.is_lapse());
    }
}
