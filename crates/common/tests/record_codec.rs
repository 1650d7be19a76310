//! The task record's Redis encoding (`[u16 header length][MessagePack header][MessagePack body]`)
//! under arbitrary input:
//!
//! - any valid [`TaskRecord`] (unicode strings, empty lists, integers up to 2^53 − 1) survives
//!   `to_msgpack` → `from_msgpack` exactly;
//! - `from_msgpack` never panics, whatever the bytes; a truncated encoding is an error, and a
//!   mutated one is either an error or a record that encodes and decodes stably;
//! - the Lua prelude every transition script starts with (`load_task` / `save_task`) decodes and
//!   re-encodes a Rust-written record so that Rust reads back the same record, against a real
//!   redis-server. (`lifecycle.rs` drives the same path through real transitions: records written
//!   by `enqueue` are re-encoded by `claim.lua` and decoded by [`dramaq_common::queue::Queue`].)
//!
//! Case counts are bounded so the whole file runs in a few seconds.

use dramaq_common::model::{
    AttemptError, DepRef, FailureClass, TaskKind, TaskPayload, TaskRecord, TaskState,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

/// Largest integer a Lua number (a double) holds exactly; records never go past it.
const MAX_SAFE: u64 = (1 << 53) - 1;

/// Any string of up to 24 chars: any Unicode scalar value, control characters and the empty
/// string included.
fn text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..24).prop_map(|cs| cs.into_iter().collect())
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

/// u64 below 2^53, with the edges and zero (left out of the record) likely.
fn safe_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(MAX_SAFE),
        Just(u64::from(u32::MAX) + 1),
        0..=MAX_SAFE
    ]
}

/// i64 within ±(2^53 − 1).
fn safe_i64() -> impl Strategy<Value = i64> {
    let max = MAX_SAFE as i64;
    prop_oneof![Just(0), Just(max), Just(-max), -max..=max]
}

fn any_u32() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), Just(u32::MAX), any::<u32>()]
}

fn kind() -> impl Strategy<Value = TaskKind> {
    proptest::sample::select(TaskKind::ALL.to_vec())
}

fn state() -> impl Strategy<Value = TaskState> {
    proptest::sample::select(TaskState::ALL.to_vec())
}

fn class() -> impl Strategy<Value = FailureClass> {
    proptest::sample::select(FailureClass::ALL.to_vec())
}

fn payload() -> impl Strategy<Value = TaskPayload> {
    prop_oneof![
        (text(), any_u32(), text(), opt_text()).prop_map(
            |(prompt, seed, aspect_ratio, reference_image)| TaskPayload::Image {
                prompt,
                seed,
                aspect_ratio,
                reference_image,
            }
        ),
        (
            text(),
            opt_text(),
            any_u32(),
            text(),
            text(),
            opt_text(),
            proptest::option::of(any_u32()),
        )
            .prop_map(
                |(
                    prompt,
                    negative_prompt,
                    duration_s,
                    aspect_ratio,
                    resolution,
                    first_frame,
                    seed,
                )| {
                    TaskPayload::Video {
                        prompt,
                        negative_prompt,
                        duration_s,
                        aspect_ratio,
                        resolution,
                        first_frame,
                        seed,
                    }
                }
            ),
        (text(), text(), text()).prop_map(|(text, voice, speaker)| TaskPayload::Voice {
            text,
            voice,
            speaker
        }),
        (vec(text(), 0..4), vec(text(), 0..4)).prop_map(|(scenes, voice)| TaskPayload::Assembly {
            scenes,
            voice,
            master: None
        }),
    ]
}

fn dep() -> impl Strategy<Value = DepRef> {
    (text(), text()).prop_map(|(id, account)| DepRef { id, account })
}

fn attempt_error() -> impl Strategy<Value = AttemptError> {
    (any_u32(), class(), opt_text(), text(), safe_i64(), text()).prop_map(
        |(attempt, class, code, message, at_ms, account)| AttemptError {
            attempt,
            class,
            code,
            message,
            at_ms,
            account,
        },
    )
}

/// Any valid record: every field drawn independently (the codec does not care whether the
/// combination makes sense as a lifecycle).
fn record() -> impl Strategy<Value = TaskRecord> {
    let names = (text(), text(), text(), text(), kind(), state(), text());
    let counters = (
        vec(text(), 0..4),
        any_u32(),
        safe_u64(),
        any_u32(),
        any_u32(),
        any_u32(),
        any_u32(),
    );
    let provider = (
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        vec(dep(), 0..4),
        payload(),
        text(),
    );
    let outcome = (
        opt_text(),
        opt_text(),
        proptest::option::of(safe_u64()),
        proptest::option::of(class()),
        vec(attempt_error(), 0..4),
        any::<bool>(),
        any::<u32>(),
        opt_text(),
        opt_text(),
    );
    let times = (
        safe_i64(),
        safe_i64(),
        proptest::option::of(safe_i64()),
        proptest::option::of(safe_i64()),
        proptest::option::of(safe_i64()),
    );
    (names, counters, provider, outcome, times).prop_map(
        |(
            (id, season, group, label, kind, state, account),
            (chain, chain_pos, fence, attempt, max_attempts, stalls, polls),
            (entry, holder, provider_task_id, poll_locator, result, deps, payload, ext),
            (
                output,
                sha256,
                bytes,
                failure,
                errors,
                possible_duplicate,
                fetch_failures,
                moving_to,
                done_by,
            ),
            (created_ms, updated_ms, ready_ms, submitted_ms, done_ms),
        )| TaskRecord {
            id,
            season,
            group,
            label,
            kind,
            state,
            account,
            chain,
            chain_pos,
            fence,
            attempt,
            max_attempts,
            stalls,
            entry,
            holder,
            key: None,
            provider_task_id,
            poll_locator,
            result,
            polls,
            fetch_failures,
            moving_to,
            deps,
            payload,
            ext,
            output,
            sha256,
            bytes,
            done_by,
            failure,
            errors,
            possible_duplicate,
            created_ms,
            updated_ms,
            ready_ms,
            submitted_ms,
            done_ms,
        },
    )
}

/// A record's encoding and one (position, xor mask) mutation of it.
fn encoded_with_mutation() -> impl Strategy<Value = (TaskRecord, Vec<u8>, usize, u8)> {
    record().prop_flat_map(|r| {
        let bytes = r.to_msgpack().expect("a generated record encodes");
        let len = bytes.len();
        (Just(r), Just(bytes), 0..len, 1..=u8::MAX)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_records_round_trip_exactly(r in record()) {
        let bytes = r.to_msgpack().expect("encode");
        let back = TaskRecord::from_msgpack(&bytes).expect("decode");
        prop_assert_eq!(back, r);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        let _ = TaskRecord::from_msgpack(&bytes);
    }

    /// Arbitrary bytes behind a header length that fits them, so decoding gets past framing.
    #[test]
    fn framed_arbitrary_bytes_never_panic(rest in vec(any::<u8>(), 0..512), split in any::<u16>()) {
        let hlen = if rest.is_empty() { 0 } else { split as usize % (rest.len() + 1) } as u16;
        let mut bytes = hlen.to_be_bytes().to_vec();
        bytes.extend_from_slice(&rest);
        let _ = TaskRecord::from_msgpack(&bytes);
    }

    #[test]
    fn truncated_encodings_are_errors((r, bytes, cut, _mask) in encoded_with_mutation()) {
        let _ = r;
        prop_assert!(TaskRecord::from_msgpack(&bytes[..cut]).is_err(), "cut at {}", cut);
    }

    #[test]
    fn mutated_encodings_error_or_decode_stably(
        (_r, mut bytes, at, mask) in encoded_with_mutation()
    ) {
        bytes[at] ^= mask;
        if let Ok(decoded) = TaskRecord::from_msgpack(&bytes) {
            // A flipped byte inside a string is still a record; it must then be an ordinary
            // one: it encodes (or is refused with an error) and reads back the same.
            if let Ok(again) = decoded.to_msgpack() {
                let back = TaskRecord::from_msgpack(&again).expect("re-encoded record decodes");
                prop_assert_eq!(back, decoded);
            }
        }
    }
}

/// Deep nesting inside the header is an error, not a stack overflow.
#[test]
fn deeply_nested_header_is_an_error() {
    for depth in [64usize, 1_000, 60_000] {
        let mut header = vec![0x91u8; depth]; // fixarray of one element, nested
        header.push(0xc0); // nil
        let len = u16::try_from(header.len()).expect("fits");
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&header);
        assert!(TaskRecord::from_msgpack(&bytes).is_err(), "depth {depth}");
    }
}

/// `load_task` then `save_task` of `prelude.lua`: what every transition does to a record.
const LUA_ROUND_TRIP: &str = "local t = load_task(KEYS[1])\nsave_task(KEYS[1], t)\nreturn 1";

#[test]
fn lua_prelude_re_encodes_rust_records_losslessly() {
    let server = dramaq_common::testkit::RedisServer::start().expect("redis-server");
    let client = redis::Client::open(server.url()).expect("client");
    let mut conn = client.get_connection().expect("connect");
    let script = redis::Script::new(&format!(
        "{}\n{LUA_ROUND_TRIP}",
        include_str!("../src/scripts/prelude.lua")
    ));

    let mut runner = TestRunner::deterministic();
    let strategy = record();
    for case in 0..128 {
        let r = strategy
            .new_tree(&mut runner)
            .expect("generate a record")
            .current();
        let key = format!("dq:{{codec}}:t:{case}");
        let written = r.to_msgpack().expect("encode");
        redis::cmd("SET")
            .arg(&key)
            .arg(&written)
            .exec(&mut conn)
            .expect("SET");
        let ran: i64 = script
            .key(&key)
            .invoke(&mut conn)
            .expect("prelude round trip");
        assert_eq!(ran, 1);
        let raw: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut conn).expect("GET");
        let back = TaskRecord::from_msgpack(&raw).unwrap_or_else(|e| {
            panic!("case {case}: Lua's re-encoding does not decode: {e}\nrecord: {r:?}")
        });
        assert_eq!(back, r, "case {case}: changed by Lua's re-encoding");
    }
}
