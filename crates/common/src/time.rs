//! Wall-clock helpers for the few places that are not inside a Lua script.
//!
//! Leases, schedules and limits take their clock from Redis `TIME` inside the scripts
//! (docs/invariants.md, "Time comes from Redis"); this module is for log fields and local durations only.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
