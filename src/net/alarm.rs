//! A deadline timer armed lazily, for deadlines that nearly never fire.
//!
//! A fresh `tokio::time::timeout` per request puts every request through tokio's timer wheel
//! twice, to insert and to remove its entry. An [`Alarm`] keeps one timer and touches it only
//! when it must: a later deadline than the armed one leaves the timer alone (and re-arms it only
//! if the timer fires first), an earlier one re-arms it. The server's idle timeout per client
//! connection and the load generator's per-attempt deadline both use it.

use std::pin::Pin;
use std::time::Instant;
use tokio::time::Sleep;

/// One timer for a sequence of deadlines. Contract: call [`Alarm::until`] from inside a tokio
/// runtime with timers enabled.
pub struct Alarm {
    sleep: Pin<Box<Sleep>>,
}

impl Default for Alarm {
    fn default() -> Alarm {
        Alarm::new()
    }
}

impl Alarm {
    /// An alarm armed for now: its first [`Alarm::until`] sets it.
    pub fn new() -> Alarm {
        Alarm {
            sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
        }
    }

    /// Completes at `deadline` (or at once if it has passed). Cancel-safe.
    pub async fn until(&mut self, deadline: Instant) {
        let deadline = tokio::time::Instant::from_std(deadline);
        // At most three rounds: an earlier armed deadline passes, the timer is re-armed for
        // `deadline` itself, and that passes.
        loop {
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            if self.sleep.is_elapsed() || self.sleep.deadline() > deadline {
                self.sleep.as_mut().reset(deadline);
            }
            (&mut self.sleep).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Never early: a later deadline than the armed one waits for it and then goes on to its
    /// own; a passed one completes at once; an earlier deadline than an armed far one re-arms
    /// the timer, so it does not wait for the far one. (Only lower bounds on real time, and one
    /// upper bound of a minute's half, so that a busy machine cannot make it flake.)
    #[test]
    fn an_alarm_fires_at_each_deadline_it_is_given_whatever_was_armed_before() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let start = Instant::now();
            let mut alarm = Alarm::new();
            alarm.until(start + Duration::from_millis(5)).await;
            assert!(Instant::now() >= start + Duration::from_millis(5));
            alarm.until(start + Duration::from_millis(15)).await;
            assert!(Instant::now() >= start + Duration::from_millis(15));
            alarm.until(start).await;
            let far = tokio::time::timeout(Duration::from_millis(10), async {
                alarm.until(Instant::now() + Duration::from_secs(60)).await;
            })
            .await;
            assert!(far.is_err(), "a minute away");
            let near = Instant::now() + Duration::from_millis(5);
            alarm.until(near).await;
            let now = Instant::now();
            assert!(now >= near && now < near + Duration::from_secs(30));
        });
    }
}
