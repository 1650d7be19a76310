//! The leases this process holds, so the heartbeat can renew them in one call per account.
//!
//! A task is registered when claimed (or taken for download) and removed when it leaves the
//! worker's hands. When a heartbeat finds a lease lost (the reaper gave the task to someone else
//! after a long pause), the lease is no longer renewed; the work in progress runs on and its late
//! transition is refused by the fencing token.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Clone)]
struct Held {
    account: String,
    fence: u64,
}

#[derive(Default)]
pub struct HeldLeases {
    inner: Mutex<HashMap<String, Held>>,
}

impl HeldLeases {
    pub fn insert(&self, id: &str, account: &str, fence: u64) {
        let held = Held {
            account: account.to_string(),
            fence,
        };
        self.lock().insert(id.to_string(), held);
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// `(task id, fence)` grouped by account.
    pub fn by_account(&self) -> HashMap<String, Vec<(String, u64)>> {
        let mut out: HashMap<String, Vec<(String, u64)>> = HashMap::new();
        for (id, h) in self.lock().iter() {
            out.entry(h.account.clone())
                .or_default()
                .push((id.clone(), h.fence));
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
