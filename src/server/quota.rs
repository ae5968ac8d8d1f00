//! Connections per caller: one client (one uid) may not hold every slot of
//! the socket, so that a leaking or hostile caller leaves room for the rest.
//! Root and the daemon's own user are not counted (see `admit`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Open connections per uid, up to a limit each.
#[derive(Debug)]
pub struct PerCaller {
    limit: usize,
    open: Mutex<HashMap<u32, usize>>,
}

/// One connection counted for its caller until dropped.
#[derive(Debug)]
pub struct CallerSlot {
    owner: Arc<PerCaller>,
    uid: u32,
}

impl PerCaller {
    /// Counts with `limit` connections per uid.
    pub fn new(limit: usize) -> Arc<PerCaller> {
        Arc::new(PerCaller {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for `uid`, or `None` when it holds its limit already.
    pub fn take(self: &Arc<Self>, uid: u32) -> Option<CallerSlot> {
        let mut open = self.lock();
        let count = open.entry(uid).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(CallerSlot {
            owner: Arc::clone(self),
            uid,
        })
    }

    /// Connections `uid` holds now.
    pub fn held_by(&self, uid: u32) -> usize {
        self.lock().get(&uid).copied().unwrap_or(0)
    }
}

impl Drop for CallerSlot {
    fn drop(&mut self) {
        let mut open = self.owner.lock();
        if let Some(count) = open.get_mut(&self.uid) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PerCaller;

    #[test]
    fn a_caller_gets_its_limit_and_a_slot_back_when_one_closes() {
        let quota = PerCaller::new(2);
        let a = quota.take(1000).expect("first");
        let _b = quota.take(1000).expect("second");
        assert!(quota.take(1000).is_none(), "third refused");
        assert!(quota.take(1001).is_some(), "another caller is not counted");
        drop(a);
        assert_eq!(quota.held_by(1000), 1);
        assert!(quota.take(1000).is_some(), "room again");
    }
}
