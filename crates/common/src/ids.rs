//! Content-addressed task ids.
//!
//! A task's id is a hash of everything that changes its output: season, kind, where it sits
//! (episode and scene/line), the provider chain, the payload and the ids of its dependencies.
//! Enqueueing the same script twice therefore produces the same ids and adds nothing; editing one
//! scene changes that scene's id and, because the episode assembly's payload lists its scenes'
//! ids, the assembly's id too — and nothing else.

use crate::model::{TaskKind, TaskPayload};
use sha2::{Digest, Sha256};

/// Hex digits of the hash kept in an id: 64 bits, collision-free far past any season size.
const HASH_HEX_LEN: usize = 16;

/// The fields that identify a task's output.
pub struct IdInput<'a> {
    pub season: &'a str,
    pub group: &'a str,
    pub label: &'a str,
    pub chain: &'a [String],
    pub payload: &'a TaskPayload,
    pub deps: &'a [String],
}

pub fn task_id(input: &IdInput<'_>) -> String {
    let kind: TaskKind = input.payload.kind();
    let canonical = serde_json::json!({
        "v": 1,
        "season": input.season,
        "group": input.group,
        "label": input.label,
        "chain": input.chain,
        "payload": input.payload,
        "deps": input.deps,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    let hex = hex::encode(digest);
    format!("{}-{}", kind.id_prefix(), &hex[..HASH_HEX_LEN])
}

/// True when `s` is safe as a path component and a Redis key part: `[A-Za-z0-9_-]`, 1..=64
/// characters, not starting with `-`. Used for season ids, group names and task ids.
pub fn is_safe_component(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voice(text: &str) -> TaskPayload {
        TaskPayload::Voice {
            text: text.into(),
            voice: "alloy".into(),
            speaker: "mira".into(),
        }
    }

    #[test]
    fn same_content_same_id_and_edits_change_it() {
        let chain = vec!["tts".to_string()];
        let p = voice("hello");
        let a = IdInput {
            season: "s1",
            group: "ep01",
            label: "ep01/line01",
            chain: &chain,
            payload: &p,
            deps: &[],
        };
        let id1 = task_id(&a);
        assert_eq!(id1, task_id(&a));
        assert!(id1.starts_with("voc-") && id1.len() == 4 + HASH_HEX_LEN);
        let p2 = voice("hello!");
        let b = IdInput { payload: &p2, ..a };
        assert_ne!(id1, task_id(&b));
        let other_season = IdInput { season: "s2", ..b };
        assert_ne!(task_id(&b), task_id(&other_season));
    }

    #[test]
    fn safe_components() {
        assert!(is_safe_component("ep01"));
        assert!(is_safe_component("vid-0123abcd"));
        for bad in ["", "../x", "a/b", "-x", "a b", "é", &"x".repeat(65)] {
            assert!(!is_safe_component(bad), "{bad:?}");
        }
    }
}
