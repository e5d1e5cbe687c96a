//! Per-node clocks: what each simulated server and client believes the time is.
//!
//! A real node reads a clock that runs a little fast or slow (crystal drift, NTP slewing) and
//! started at some arbitrary origin. Anything a node decides on time (an election timeout, a
//! lease, a session deadline) is decided on that clock, and a protocol that is only correct
//! when every clock agrees is not correct. So every node here reads its own clock:
//!
//! ```text
//! local(t) = anchor_local + (t - anchor_true) * rate
//! ```
//!
//! where `t` is the simulator's true time. A rate change (the scenario event `clock: {node,
//! rate}`) re-anchors at the moment of the change, so a node's clock never jumps: it only runs
//! at another speed from then on. Rates are kept in parts per billion and every conversion is
//! integer arithmetic, so a run is byte-identical on every machine; with rate 1 and offset 0
//! (every node, when a scenario has no `clock` key) local time *is* true time, and runs are
//! exactly what they were before clocks existed.
//!
//! A node only ever sees `local(now)`. Timers a node sets are deadlines on its own clock;
//! [`NodeClock::true_time_of`] says when, in true time, that clock reaches one.

use crate::node::Time;
use std::time::Duration;

/// One part per billion: the unit of [`NodeClock`] rates.
pub const RATE_ONE_PPB: u64 = 1_000_000_000;
/// The slowest clock a scenario may ask for: half speed.
pub const RATE_PPB_MIN: u64 = RATE_ONE_PPB / 2;
/// The fastest clock a scenario may ask for: double speed.
pub const RATE_PPB_MAX: u64 = RATE_ONE_PPB * 2;

/// A node's clock. See the module documentation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NodeClock {
    anchor_true: Time,
    anchor_local: Time,
    rate_ppb: u64,
}

impl Default for NodeClock {
    /// The perfect clock: local time is true time.
    fn default() -> NodeClock {
        NodeClock::new(Duration::ZERO, RATE_ONE_PPB)
    }
}

impl NodeClock {
    /// A clock that reads `offset` at true time zero and runs at `rate_ppb` / 10^9.
    ///
    /// Panics if the rate is outside [`RATE_PPB_MIN`]..=[`RATE_PPB_MAX`]: scenario validation
    /// and the swarm keep rates there, so another one is a simulator bug.
    pub fn new(offset: Duration, rate_ppb: u64) -> NodeClock {
        assert_rate(rate_ppb);
        NodeClock {
            anchor_true: Time::ZERO,
            anchor_local: Time::from_duration(offset),
            rate_ppb,
        }
    }

    /// The rate as a fraction (1.0 is perfect), for traces and summaries.
    pub fn rate(&self) -> f64 {
        self.rate_ppb as f64 / RATE_ONE_PPB as f64
    }

    /// What this clock reads at true time `now` (not before its last anchor).
    pub fn local(&self, now: Time) -> Time {
        assert!(
            now >= self.anchor_true,
            "a clock is read at {now}, before its anchor {}",
            self.anchor_true
        );
        let elapsed_true = u128::from(now.as_nanos() - self.anchor_true.as_nanos());
        let elapsed_local = elapsed_true * u128::from(self.rate_ppb) / u128::from(RATE_ONE_PPB);
        let local = u128::from(self.anchor_local.as_nanos()) + elapsed_local;
        Time::from_nanos(u64::try_from(local).unwrap_or(u64::MAX))
    }

    /// The first true time, not before `now`, at which this clock reads `deadline` or later:
    /// when a timer set for `deadline` on this clock fires.
    pub fn true_time_of(&self, deadline: Time, now: Time) -> Time {
        let local_now = self.local(now);
        if deadline <= local_now {
            return now;
        }
        let ahead_local = u128::from(deadline.as_nanos() - self.anchor_local.as_nanos());
        // Rounded up, so that the clock has reached `deadline` when the timer fires.
        let ahead_true = ahead_local
            .saturating_mul(u128::from(RATE_ONE_PPB))
            .div_ceil(u128::from(self.rate_ppb));
        let at = u128::from(self.anchor_true.as_nanos()) + ahead_true;
        Time::from_nanos(u64::try_from(at).unwrap_or(u64::MAX)).max(now)
    }

    /// From true time `now` on, the clock runs at `rate_ppb`. It does not jump.
    pub fn set_rate(&mut self, now: Time, rate_ppb: u64) {
        assert_rate(rate_ppb);
        self.anchor_local = self.local(now);
        self.anchor_true = now;
        self.rate_ppb = rate_ppb;
    }
}

fn assert_rate(rate_ppb: u64) {
    assert!(
        (RATE_PPB_MIN..=RATE_PPB_MAX).contains(&rate_ppb),
        "clock rate {rate_ppb} ppb is outside {RATE_PPB_MIN}..={RATE_PPB_MAX}"
    );
}

/// A rate given as a fraction (`1.03`), in parts per billion, if it lies within the bounds.
pub fn rate_ppb_of(rate: f64) -> Option<u64> {
    let ppb = (rate * RATE_ONE_PPB as f64).round();
    if !ppb.is_finite() || ppb < RATE_PPB_MIN as f64 || ppb > RATE_PPB_MAX as f64 {
        return None;
    }
    Some(ppb as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Time {
        Time::from_duration(Duration::from_millis(millis))
    }

    #[test]
    fn a_perfect_clock_reads_true_time_and_fires_timers_on_time() {
        let clock = NodeClock::default();
        assert_eq!(clock.local(ms(1234)), ms(1234));
        assert_eq!(clock.true_time_of(ms(2000), ms(1234)), ms(2000));
    }

    #[test]
    fn a_fast_clock_with_an_offset_runs_ahead_and_its_timers_fire_early_in_true_time() {
        // 1% fast, and ten seconds ahead from the start.
        let clock = NodeClock::new(Duration::from_secs(10), 1_010_000_000);
        assert_eq!(clock.local(ms(0)), ms(10_000));
        assert_eq!(clock.local(ms(1000)), ms(11_010));
        // A timer one local second from now fires after 990.1 ms of true time.
        let fires = clock.true_time_of(ms(12_010), ms(1000));
        assert_eq!(fires.as_nanos(), 1_990_099_010);
        assert!(
            clock.local(fires) >= ms(12_010),
            "the clock has reached the deadline"
        );
        assert!(clock.local(Time::from_nanos(fires.as_nanos() - 1)) < ms(12_010));
    }

    #[test]
    fn a_rate_change_bends_the_clock_without_a_jump() {
        let mut clock = NodeClock::default();
        clock.set_rate(ms(5000), 2 * RATE_ONE_PPB);
        assert_eq!(clock.local(ms(5000)), ms(5000), "no jump at the change");
        assert_eq!(clock.local(ms(6000)), ms(7000), "twice as fast after it");
        assert_eq!(clock.true_time_of(ms(9000), ms(6000)), ms(7000));
    }

    #[test]
    fn a_deadline_already_passed_fires_now() {
        let clock = NodeClock::new(Duration::ZERO, RATE_PPB_MIN);
        assert_eq!(clock.true_time_of(ms(10), ms(100)), ms(100));
    }

    #[test]
    fn rates_outside_half_to_double_speed_are_refused() {
        assert_eq!(rate_ppb_of(1.03), Some(1_030_000_000));
        assert_eq!(rate_ppb_of(0.49), None);
        assert_eq!(rate_ppb_of(2.5), None);
        assert_eq!(rate_ppb_of(f64::NAN), None);
    }
}
