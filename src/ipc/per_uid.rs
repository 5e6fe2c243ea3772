//! Per-uid shares of a server's connection slots, so that one local user cannot take them all
//! (the socket's subscribers, the HTTP trigger's connections).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Counts the connections each uid holds, up to `limit` each.
#[derive(Clone, Debug)]
pub struct PerUid {
    limit: usize,
    held: Arc<Mutex<HashMap<u32, usize>>>,
}

/// One connection's share; given back when dropped.
#[derive(Debug)]
pub struct UidSlot {
    uid: u32,
    held: Arc<Mutex<HashMap<u32, usize>>>,
}

impl PerUid {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            held: Arc::default(),
        }
    }

    /// The most connections one uid may hold.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A slot for `uid`, or `None` when it already holds `limit` connections.
    pub fn try_acquire(&self, uid: u32) -> Option<UidSlot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(uid).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(UidSlot {
            uid,
            held: self.held.clone(),
        })
    }

    /// How many connections `uid` holds now.
    pub fn held_by(&self, uid: u32) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(&uid).copied().unwrap_or(0)
    }
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_gets_its_share_and_others_keep_theirs() {
        let p = PerUid::new(2);
        let a1 = p.try_acquire(1000).unwrap();
        let _a2 = p.try_acquire(1000).unwrap();
        assert!(p.try_acquire(1000).is_none());
        let _b = p.try_acquire(1001).unwrap();
        drop(a1);
        assert_eq!(p.held_by(1000), 1);
        assert!(p.try_acquire(1000).is_some());
    }
}
