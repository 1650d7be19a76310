//! Provider fallback: a task that died for a reason another provider may not share moves to the
//! next account of its provider chain instead of staying in the dead-letter set.
//!
//! The classes that fall back are the ones design-notes hands to "the reaper's business, then a
//! fallback provider or the DLQ": `timeout` (render past its deadline), `result_expired`,
//! `model_retired` and `stalled`. Content-policy and request errors would fail the same way
//! elsewhere, so they stay dead. The move is the dead-letter queue's cross-account requeue
//! ([`dramaq_common::ops::Ops::requeue_task`]): idempotent steps, attempts reset, error history
//! kept, `chain_pos` advanced. With no next account the task stays dead with its class.

use dramaq_common::model::{FailureClass, TaskRecord};
use dramaq_common::ops::Ops;
use dramaq_common::queue::Queue;
use tracing::{info, warn};

/// True for the classes that try the next provider.
pub fn falls_back(class: FailureClass) -> bool {
    matches!(
        class,
        FailureClass::Timeout
            | FailureClass::ResultExpired
            | FailureClass::ModelRetired
            | FailureClass::Stalled
    )
}

/// The account after the task's current one in its chain, if any.
pub fn next_account(rec: &TaskRecord) -> Option<&str> {
    rec.chain
        .get(rec.chain_pos as usize + 1)
        .map(String::as_str)
}

/// After `rec` was dead-lettered with `class`: move it to the next provider when that applies.
/// Returns the account it moved to.
pub async fn after_dead(queue: &Queue, rec: &TaskRecord, class: FailureClass) -> Option<String> {
    if !falls_back(class) {
        return None;
    }
    let next = next_account(rec)?;
    match Ops::new(queue.clone())
        .requeue_task(&rec.account, &rec.id, Some(next))
        .await
    {
        Ok((outcome, now_in)) => {
            info!(task = %rec.id, label = %rec.label, from = %rec.account, to = %now_in, ?outcome, %class, "fell back to the next provider");
            Some(now_in)
        }
        Err(e) => {
            // The task stays dead (or half-moved, which the next `dlq requeue` finishes).
            warn!(task = %rec.id, error = %e, "fallback to {next} failed; the task stays in the dead-letter set");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_provider_specific_failures_fall_back() {
        assert!(falls_back(FailureClass::Timeout));
        assert!(falls_back(FailureClass::ModelRetired));
        assert!(!falls_back(FailureClass::ContentPolicy));
        assert!(!falls_back(FailureClass::InvalidRequest));
        assert!(!falls_back(FailureClass::ProviderError));
    }
}
