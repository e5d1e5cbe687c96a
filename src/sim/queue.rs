//! The event queue and the simulated clock.
//!
//! Events are ordered by (simulated time, insertion sequence), so two events at the same
//! instant run in the order they were scheduled: deterministic, with no tie broken by memory
//! addresses or hash order. Only simulated time exists here.

use crate::node::Time;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// The heap holds only this small key; events wait in a slab, so that sifting the heap moves
/// 24 bytes instead of a whole message.
#[derive(PartialEq, Eq)]
struct Scheduled {
    at: Time,
    sequence: u64,
    slot: u32,
}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed, so that the max-heap pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.sequence).cmp(&(self.at, self.sequence))
    }
}

/// A bounded priority queue of future events plus the simulated clock.
pub struct EventQueue<E> {
    heap: BinaryHeap<Scheduled>,
    slab: Vec<Option<E>>,
    free_slots: Vec<u32>,
    now: Time,
    next_sequence: u64,
    pending_max: usize,
}

/// The queue is full: the simulation generates events faster than it consumes them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the event queue holds {pending_max} events, its bound")]
pub struct QueueFull {
    pub pending_max: usize,
}

impl<E> EventQueue<E> {
    pub fn new(pending_max: usize) -> EventQueue<E> {
        EventQueue {
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free_slots: Vec::new(),
            now: Time::ZERO,
            next_sequence: 0,
            pending_max,
        }
    }

    pub fn now(&self) -> Time {
        self.now
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Schedules `event` at `at`, which must not be in the past.
    pub fn push(&mut self, at: Time, event: E) -> Result<(), QueueFull> {
        assert!(
            at >= self.now,
            "scheduling into the past: {at} < {}",
            self.now
        );
        if self.heap.len() >= self.pending_max {
            return Err(QueueFull {
                pending_max: self.pending_max,
            });
        }
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(event);
                slot
            }
            None => {
                self.slab.push(Some(event));
                u32::try_from(self.slab.len() - 1).expect("pending_max bounds the slab")
            }
        };
        self.heap.push(Scheduled {
            at,
            sequence: self.next_sequence,
            slot,
        });
        self.next_sequence += 1;
        Ok(())
    }

    /// The time of the next event, if any.
    pub fn peek_time(&self) -> Option<Time> {
        self.heap.peek().map(|scheduled| scheduled.at)
    }

    /// Removes the earliest event and advances the clock to it.
    pub fn pop(&mut self) -> Option<(Time, E)> {
        let scheduled = self.heap.pop()?;
        debug_assert!(scheduled.at >= self.now, "the clock never goes back");
        self.now = scheduled.at;
        let event = self.slab[scheduled.slot as usize]
            .take()
            .expect("a scheduled slot holds its event");
        self.free_slots.push(scheduled.slot);
        Some((scheduled.at, event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_by_time_then_by_insertion_order() {
        let mut queue = EventQueue::new(10);
        queue.push(Time::from_nanos(5), "late").unwrap();
        queue.push(Time::from_nanos(1), "first at 1").unwrap();
        queue.push(Time::from_nanos(1), "second at 1").unwrap();
        assert_eq!(queue.pop(), Some((Time::from_nanos(1), "first at 1")));
        assert_eq!(queue.pop(), Some((Time::from_nanos(1), "second at 1")));
        assert_eq!(queue.now(), Time::from_nanos(1));
        assert_eq!(queue.pop(), Some((Time::from_nanos(5), "late")));
        assert_eq!(queue.pop(), None);
    }

    #[test]
    fn a_full_queue_is_a_reported_error_not_a_hang() {
        let mut queue = EventQueue::new(1);
        queue.push(Time::ZERO, 1).unwrap();
        assert_eq!(queue.push(Time::ZERO, 2), Err(QueueFull { pending_max: 1 }));
    }
}
