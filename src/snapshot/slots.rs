//! The host-wide limit on concurrent flattens. A flatten reads and writes
//! every object of the image, so a burst of them would starve the guests'
//! own I/O on this host: jobs wait for a slot in arrival order, and while
//! they wait their progress says where they are in the queue.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::CancelFlag;

/// How often a waiting job looks at its cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
struct State {
    running: usize,
    queue: VecDeque<u64>,
    next_ticket: u64,
}

/// The slots; shared by every job of the daemon.
#[derive(Debug)]
pub struct FlattenSlots {
    /// Most flattens at once; 0 is no limit.
    limit: usize,
    state: Mutex<State>,
    changed: Notify,
}

/// A held slot, given back on drop.
#[derive(Debug)]
pub struct Slot(Arc<FlattenSlots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.lock().running -= 1;
        self.0.changed.notify_waiters();
    }
}

/// A place in the queue, left on drop (a job cancelled while waiting, or
/// whose task was dropped, must not block the ones behind it).
struct Ticket<'a> {
    slots: &'a FlattenSlots,
    number: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let number = self.number;
        self.slots.lock().queue.retain(|t| *t != number);
        self.slots.changed.notify_waiters();
    }
}

impl FlattenSlots {
    /// `limit` slots; 0 is no limit.
    pub fn new(limit: usize) -> Arc<FlattenSlots> {
        Arc::new(FlattenSlots {
            limit,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (running, waiting) flattens.
    pub fn usage(&self) -> (usize, usize) {
        let state = self.lock();
        (state.running, state.queue.len())
    }

    /// The configured limit (0: none).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Wait for a slot, in arrival order. `waiting` hears the queue
    /// position (1 = next) whenever it changes; `None` when `cancel` was set
    /// while waiting.
    pub async fn acquire(
        self: &Arc<Self>,
        cancel: &CancelFlag,
        mut waiting: impl FnMut(u64),
    ) -> Option<Slot> {
        let ticket = {
            let mut state = self.lock();
            let number = state.next_ticket;
            state.next_ticket += 1;
            state.queue.push_back(number);
            Ticket {
                slots: self,
                number,
            }
        };
        let mut told = None;
        loop {
            let changed = self.changed.notified();
            let position = {
                let mut state = self.lock();
                let free = self.limit == 0 || state.running < self.limit;
                if free && state.queue.front() == Some(&ticket.number) {
                    state.queue.pop_front();
                    state.running += 1;
                    drop(state);
                    // the next in line may have a free slot too
                    self.changed.notify_waiters();
                    std::mem::forget(ticket);
                    return Some(Slot(Arc::clone(self)));
                }
                state.queue.iter().position(|t| *t == ticket.number)? as u64 + 1
            };
            if told != Some(position) {
                told = Some(position);
                waiting(position);
            }
            if cancel.load(Ordering::SeqCst) {
                return None;
            }
            let _ = tokio::time::timeout(CANCEL_POLL, changed).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_the_limit_and_serves_in_order() {
        let slots = FlattenSlots::new(1);
        let cancel = CancelFlag::default();
        let first = slots.acquire(&cancel, |_| {}).await.expect("slot");
        let (s2, c2) = (Arc::clone(&slots), cancel.clone());
        let positions = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&positions);
        let second = tokio::spawn(async move {
            s2.acquire(&c2, |p| seen.lock().expect("lock").push(p))
                .await
                .is_some()
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(slots.usage(), (1, 1));
        drop(first);
        assert!(second.await.expect("task"));
        assert_eq!(*positions.lock().expect("lock"), vec![1]);
        assert_eq!(slots.usage(), (0, 0));
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_queue() {
        let slots = FlattenSlots::new(1);
        let held = slots.acquire(&CancelFlag::default(), |_| {}).await;
        let cancel = CancelFlag::default();
        let (s2, c2) = (Arc::clone(&slots), cancel.clone());
        let waiter = tokio::spawn(async move { s2.acquire(&c2, |_| {}).await.is_some() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.store(true, Ordering::SeqCst);
        assert!(!waiter.await.expect("task"));
        assert_eq!(slots.usage(), (1, 0));
        drop(held);
    }

    #[tokio::test]
    async fn no_limit_never_waits() {
        let slots = FlattenSlots::new(0);
        let cancel = CancelFlag::default();
        let a = slots.acquire(&cancel, |_| panic!("waited")).await;
        let b = slots.acquire(&cancel, |_| panic!("waited")).await;
        assert!(a.is_some() && b.is_some());
        assert_eq!(slots.usage(), (2, 0));
    }
}
