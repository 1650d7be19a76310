//! What providers report an attempt cost, kept until the attempt is settled.
//!
//! Families report billing in their own units and at different moments: Runway's `cost` in
//! credits on the finished task, Kling's and OpenAI videos' output seconds (billed per second),
//! the chat family's token usage per call. The adapter notes it when it sees it ([`Bills::note`])
//! and the finishing path takes it once when it settles the attempt's budget reservation
//! ([`Provider::reported_bill`](super::Provider::reported_bill)); without a note the configured
//! price stands. The book is bounded: past [`MAX_BILLS`] unsettled notes it is cleared, and those
//! attempts settle at the configured price.

use std::collections::HashMap;
use std::sync::Mutex;

/// Unsettled notes kept at most per adapter.
pub const MAX_BILLS: usize = 4_096;

/// One attempt's cost as the provider reported it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bill {
    /// A cost in US dollars (credits converted, or tokens priced).
    Usd(f64),
    /// Seconds of output billed at the account's `price.per_second`.
    Seconds(f64),
}

impl Bill {
    /// The bill in US dollars, pricing seconds at `per_second`. Non-finite or negative
    /// reports count as nothing.
    pub fn usd(self, per_second: f64) -> f64 {
        let v = match self {
            Bill::Usd(v) => v,
            Bill::Seconds(s) => s * per_second,
        };
        if v.is_finite() && v > 0.0 {
            v
        } else {
            0.0
        }
    }
}

/// Seconds from a duration field that families send as a number (`8`) or a string (`"5"`,
/// `"5s"`); `None` when absent, unreadable or not above zero.
pub fn seconds_field(v: Option<&serde_json::Value>) -> Option<f64> {
    let v = v?;
    let s = match v {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(t) => t.trim().trim_end_matches('s').trim().parse().ok()?,
        _ => return None,
    };
    (s.is_finite() && s > 0.0).then_some(s)
}

/// Notes by provider task id (renders) or task id (synchronous calls).
#[derive(Debug, Default)]
pub struct Bills(Mutex<HashMap<String, Bill>>);

impl Bills {
    pub fn note(&self, id: &str, bill: Bill) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= MAX_BILLS && !m.contains_key(id) {
                m.clear();
            }
            m.insert(id.to_string(), bill);
        }
    }

    /// Add `usd` to the note of `id` (several paid calls in one attempt).
    pub fn add_usd(&self, id: &str, usd: f64) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= MAX_BILLS && !m.contains_key(id) {
                m.clear();
            }
            let e = m.entry(id.to_string()).or_insert(Bill::Usd(0.0));
            if let Bill::Usd(v) = e {
                *v += usd;
            }
        }
    }

    pub fn take(&self, id: &str) -> Option<Bill> {
        self.0.lock().ok()?.remove(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_taken_once_and_seconds_are_priced() {
        let b = Bills::default();
        b.note("t1", Bill::Seconds(5.0));
        assert_eq!(b.take("t1").map(|x| x.usd(0.14)), Some(0.7000000000000001));
        assert_eq!(b.take("t1"), None);
        b.add_usd("c", 0.25);
        b.add_usd("c", 0.5);
        assert_eq!(b.take("c"), Some(Bill::Usd(0.75)));
        assert_eq!(Bill::Usd(f64::NAN).usd(1.0), 0.0);
        assert_eq!(Bill::Seconds(-3.0).usd(1.0), 0.0);
    }

    #[test]
    fn seconds_are_read_from_numbers_and_strings() {
        use serde_json::json;
        for (v, want) in [
            (json!(8), Some(8.0)),
            (json!("5"), Some(5.0)),
            (json!(" 5s "), Some(5.0)),
            (json!("4.5"), Some(4.5)),
            (json!(""), None),
            (json!("-2"), None),
            (json!(null), None),
            (json!([5]), None),
        ] {
            assert_eq!(seconds_field(Some(&v)), want, "{v}");
        }
        assert_eq!(seconds_field(None), None);
    }

    #[test]
    fn the_book_stays_bounded() {
        let b = Bills::default();
        for i in 0..(MAX_BILLS + 10) {
            b.note(&i.to_string(), Bill::Usd(1.0));
        }
        assert!(b.0.lock().unwrap().len() <= MAX_BILLS);
    }
}
