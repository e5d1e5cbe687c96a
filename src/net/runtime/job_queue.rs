//! The queue from the node task to the log thread: like `std::sync::mpsc`, except that the
//! log thread can sleep until *urgent* work arrives, and the node task then does not wake it
//! for each job that may wait.
//!
//! Why: while the log thread holds the sync of work that may wait (`LAZY_SYNC_WINDOW`), every
//! job the node task sent woke it, only for it to go back to sleep. A follower the leader does
//! not count on gets a job per append; profiled under `bench --contended --acquire`, its log
//! thread switched 2.2 to 2.8 times per hand-off while it synced 0.2 to 0.4 times, and every
//! wake-up was a system call on the node task's thread too.
//!
//! Contract: any number of [`JobSender`]s, one [`JobReceiver`]. Sending never blocks (the
//! queue is unbounded; the leader's `uncommitted_entries_max` bounds how far the node runs
//! ahead of the disk). Jobs come out in the order they were sent.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// What the receiver is asleep for, so that a sender wakes it only when that arrived.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Wanted {
    Nothing,
    AnyJob,
    UrgentJob,
}

struct State<T> {
    /// Jobs in order, each with whether it is urgent.
    queue: VecDeque<(T, bool)>,
    urgent_queued: usize,
    senders: usize,
    receiver_alive: bool,
    wanted: Wanted,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    wake: Condvar,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A new queue's two ends.
pub fn channel<T>() -> (JobSender<T>, JobReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            urgent_queued: 0,
            senders: 1,
            receiver_alive: true,
            wanted: Wanted::Nothing,
        }),
        wake: Condvar::new(),
    });
    (
        JobSender {
            shared: Arc::clone(&shared),
        },
        JobReceiver { shared },
    )
}

/// The node task's end.
pub struct JobSender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> JobSender<T> {
    /// Queues `job`; gives it back if the receiver is gone. Wakes the receiver only if it waits
    /// for any job, or for an urgent one and this one is.
    pub fn send(&self, job: T, urgent: bool) -> Result<(), T> {
        let mut state = self.shared.lock();
        if !state.receiver_alive {
            return Err(job);
        }
        state.queue.push_back((job, urgent));
        state.urgent_queued += usize::from(urgent);
        let wake = match state.wanted {
            Wanted::Nothing => false,
            Wanted::AnyJob => true,
            Wanted::UrgentJob => urgent,
        };
        drop(state);
        if wake {
            self.shared.wake.notify_one();
        }
        Ok(())
    }
}

impl<T> Clone for JobSender<T> {
    fn clone(&self) -> JobSender<T> {
        self.shared.lock().senders += 1;
        JobSender {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for JobSender<T> {
    fn drop(&mut self) {
        self.shared.lock().senders -= 1;
        // The receiver must learn that no more will come, whatever it waits for.
        self.shared.wake.notify_one();
    }
}

/// The log thread's end.
pub struct JobReceiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> JobReceiver<T> {
    /// The next job, waiting for one; `None` once the queue is empty and every sender gone.
    pub fn recv(&self) -> Option<T> {
        let mut state = self.shared.lock();
        // Bounded: each wait ends with a job, or with the last sender gone.
        loop {
            if let Some(job) = Self::pop(&mut state) {
                return Some(job);
            }
            if state.senders == 0 {
                return None;
            }
            state.wanted = Wanted::AnyJob;
            state = self
                .shared
                .wake
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            state.wanted = Wanted::Nothing;
        }
    }

    /// The next job if one is queued.
    pub fn try_recv(&self) -> Option<T> {
        Self::pop(&mut self.shared.lock())
    }

    /// Sleeps until an urgent job is queued, `deadline` passes, or every sender is gone,
    /// without waking for jobs that may wait. Takes nothing.
    pub fn wait_for_urgent(&self, deadline: Instant) {
        let mut state = self.shared.lock();
        // Bounded by the deadline.
        while state.urgent_queued == 0 && state.senders > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state.wanted = Wanted::UrgentJob;
            state = self
                .shared
                .wake
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
            state.wanted = Wanted::Nothing;
        }
    }

    fn pop(state: &mut State<T>) -> Option<T> {
        let (job, urgent) = state.queue.pop_front()?;
        state.urgent_queued -= usize::from(urgent);
        assert!(state.urgent_queued <= state.queue.len());
        Some(job)
    }
}

impl<T> Drop for JobReceiver<T> {
    fn drop(&mut self) {
        self.shared.lock().receiver_alive = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn jobs_come_out_in_order_and_none_once_every_sender_is_gone() {
        let (sender, receiver) = channel();
        let second = sender.clone();
        sender.send(1, false).unwrap();
        second.send(2, true).unwrap();
        drop(sender);
        assert_eq!(receiver.recv(), Some(1));
        assert_eq!(receiver.try_recv(), Some(2));
        assert_eq!(receiver.try_recv(), None);
        drop(second);
        assert_eq!(receiver.recv(), None, "no sender left");
    }

    #[test]
    fn a_send_to_a_dropped_receiver_gives_the_job_back() {
        let (sender, receiver) = channel();
        drop(receiver);
        assert_eq!(sender.send(7, true), Err(7));
    }

    /// Work that may wait does not end the wait: it lasts until the deadline. (A lower bound on
    /// time only: the test cannot fail by the machine being slow.)
    #[test]
    fn waiting_for_urgent_work_sleeps_through_work_that_may_wait() {
        let (sender, receiver) = channel();
        let wait = Duration::from_millis(30);
        let started = Instant::now();
        let waiter = std::thread::spawn(move || {
            receiver.wait_for_urgent(started + wait);
            receiver
        });
        sender.send(1, false).unwrap();
        let receiver = waiter.join().unwrap();
        assert!(started.elapsed() >= wait, "woken by work that may wait");
        assert_eq!(receiver.try_recv(), Some(1), "and it is still there");
    }

    /// Urgent work ends the wait, long before its deadline; queued before the wait, at once.
    #[test]
    fn urgent_work_ends_the_wait() {
        let (sender, receiver) = channel();
        sender.send(1, false).unwrap();
        let waiter = std::thread::spawn(move || {
            // An hour: only the urgent job (or a lost wake-up, which hangs the test) ends it.
            receiver.wait_for_urgent(Instant::now() + Duration::from_secs(3600));
            receiver
        });
        sender.send(2, true).unwrap();
        let receiver = waiter.join().unwrap();
        assert_eq!(receiver.try_recv(), Some(1));
        assert_eq!(receiver.try_recv(), Some(2));
        // Already queued: no wait at all.
        sender.send(3, true).unwrap();
        receiver.wait_for_urgent(Instant::now() + Duration::from_secs(3600));
        assert_eq!(receiver.recv(), Some(3));
    }

    #[test]
    fn the_last_sender_leaving_ends_a_wait_for_urgent_work() {
        let (sender, receiver) = channel::<u32>();
        let waiter = std::thread::spawn(move || {
            receiver.wait_for_urgent(Instant::now() + Duration::from_secs(3600));
        });
        drop(sender);
        waiter.join().unwrap();
    }
}
