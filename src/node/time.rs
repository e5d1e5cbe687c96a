//! Time as a value. Node code never reads a clock: every entry point takes `now: Time`.
//!
//! `Time` counts nanoseconds from an origin the driver chooses (simulation start in the
//! simulator, process start in a real deployment). Only differences are meaningful.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Add;
use std::time::Duration;

/// A point in (simulated or real monotonic) time, in nanoseconds since the driver's origin.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Time(u64);

impl Time {
    pub const ZERO: Time = Time(0);

    pub const fn from_nanos(nanos: u64) -> Time {
        Time(nanos)
    }

    pub fn from_duration(since_origin: Duration) -> Time {
        Time(duration_nanos(since_origin))
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, or zero if `earlier` is in the future.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// Nanoseconds in `duration`, saturating at `u64::MAX` (about 584 years).
pub fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, rhs: Duration) -> Time {
        Time(self.0.saturating_add(duration_nanos(rhs)))
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Time {
    /// Milliseconds with microsecond precision: `1234.567ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0 / 1_000;
        write!(f, "{}.{:03}ms", micros / 1_000, micros % 1_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_a_duration_moves_time_forward_and_saturates() {
        let t = Time::from_nanos(5) + Duration::from_nanos(10);
        assert_eq!(t.as_nanos(), 15);
        assert_eq!(
            (Time::from_nanos(u64::MAX) + Duration::from_secs(1)).as_nanos(),
            u64::MAX
        );
        assert_eq!(t.saturating_since(Time::from_nanos(20)), Duration::ZERO);
        assert_eq!(
            format!("{}", Time::from_duration(Duration::from_micros(1_234_567))),
            "1234.567ms"
        );
    }

    /// The time between two instants, and zero (not a panic) when they come in the wrong order.
    #[test]
    fn time_since_an_earlier_instant_is_the_gap_between_them() {
        let later = Time::from_nanos(30);
        assert_eq!(
            later.saturating_since(Time::from_nanos(20)),
            Duration::from_nanos(10)
        );
        assert_eq!(Time::from_nanos(20).saturating_since(later), Duration::ZERO);
    }

    /// Traces and assertion messages print times with `{:?}`: the same milliseconds as
    /// `Display`, never an opaque tuple or nothing.
    #[test]
    fn debug_prints_time_as_display_does() {
        let time = Time::from_duration(Duration::from_micros(1_234_567));
        assert_eq!(format!("{time:?}"), "1234.567ms");
    }
}
