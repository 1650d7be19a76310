//! Family `openai-speech`: `POST /v1/audio/speech`, synchronous (docs/providers.md, "openai-speech").
//!
//! Quirks handled here:
//! - `input` is limited to 4,096 characters. Longer lines are split at sentence ends (else at
//!   whitespace, else hard), each piece is requested separately, and the WAV answers are joined
//!   into one file: the PCM of every `data` chunk is concatenated under the first `fmt ` chunk and
//!   the RIFF and data sizes are rewritten. Streamed WAVs carry placeholder sizes
//!   (`0xFFFFFFFF`), so a data chunk that claims more than it has runs to the end of the body.
//! - The answer is raw audio bytes; a relay that answers 200 with a JSON error is an error.
//! - There is nothing to poll.

use super::http::{self, openai, Scrubber, IDEMPOTENCY_KEY};
use super::{
    nothing_to_poll, PollOutcome, Provider, ProviderError, ResultRef, SubmitOutcome, SubmitRequest,
    SyncResult,
};
use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use dramaq_common::config::{AccountConfig, Family, Secret};
use dramaq_common::{FailureClass, TaskPayload};
use reqwest::header::CONTENT_TYPE;
use serde_json::json;

/// OpenAI's limit on `input`, in characters.
pub const MAX_INPUT_CHARS: usize = 4096;

/// A 4,096-character line is a few minutes of 24 kHz PCM, well under this.
const AUDIO_BODY_CAP: usize = 128 * 1024 * 1024;

const DEFAULT_VOICE: &str = "alloy";

pub struct OpenaiSpeech {
    client: reqwest::Client,
    base_url: String,
    model: String,
    voice: Option<String>,
    api_key: Option<Secret>,
    scrub: Scrubber,
}

// ---------------------------------------------------------------------------------------------
// Splitting
// ---------------------------------------------------------------------------------------------

/// Split `text` into trimmed pieces of at most `max` characters, preferring sentence ends in
/// the second half of a piece, then the last whitespace, then a sentence end anywhere, and only
/// then a hard cut (a single "word" longer than `max`).
pub fn split_text(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut chunks = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((window_end, _)) = rest.char_indices().nth(max) else {
            chunks.push(rest.to_string());
            break;
        };
        let cut = find_cut(rest, window_end);
        let (head, tail) = rest.split_at(cut);
        let head = head.trim_end();
        if !head.is_empty() {
            chunks.push(head.to_string());
        }
        rest = tail.trim_start();
    }
    chunks
}

/// Byte offset to cut `rest` at, at most `window_end` (a char boundary).
fn find_cut(rest: &str, window_end: usize) -> usize {
    let mut sentence = None;
    let mut space = None;
    let mut chars = rest.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if at > window_end {
            break;
        }
        if c.is_whitespace() && at > 0 {
            // Cutting before a space keeps the piece within the window, even at its very end.
            space = Some(at);
        }
        if at == window_end {
            break;
        }
        let next = chars.peek().map(|&(_, n)| n);
        let ends_sentence = (matches!(c, '.' | '!' | '?' | ';' | '\n')
            && next.is_none_or(char::is_whitespace))
            || matches!(c, '。' | '！' | '？' | '；' | '…');
        if ends_sentence {
            sentence = Some(at + c.len_utf8());
        }
    }
    match (sentence, space) {
        (Some(s), _) if s >= window_end / 2 => s,
        (_, Some(w)) => w,
        (Some(s), None) => s,
        (None, None) => window_end,
    }
}

// ---------------------------------------------------------------------------------------------
// WAV
// ---------------------------------------------------------------------------------------------

/// The parts of a RIFF/WAVE file that joining needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wav<'a> {
    /// Body of the `fmt ` chunk (16+ bytes).
    pub fmt: &'a [u8],
    /// PCM frames, trimmed to whole frames.
    pub data: &'a [u8],
}

impl Wav<'_> {
    fn block_align(&self) -> usize {
        usize::from(u16::from_le_bytes([self.fmt[12], self.fmt[13]]))
    }
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

pub fn parse_wav(bytes: &[u8]) -> Result<Wav<'_>, String> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let mut fmt: Option<&[u8]> = None;
    let mut pos = 12usize;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = le_u32(bytes, pos + 4).ok_or("truncated chunk header")? as usize;
        let start = pos + 8;
        if id == b"data" {
            let fmt = fmt.ok_or("data chunk before fmt chunk")?;
            // Streamed WAVs write placeholder sizes; the data then runs to the end.
            let end = match start.checked_add(size) {
                Some(end) if size != 0 && size != u32::MAX as usize && end <= bytes.len() => end,
                _ => bytes.len(),
            };
            let mut wav = Wav {
                fmt,
                data: &bytes[start..end],
            };
            let align = wav.block_align();
            if align > 1 {
                let whole = wav.data.len() - wav.data.len() % align;
                wav.data = &wav.data[..whole];
            }
            return Ok(wav);
        }
        let end = start
            .checked_add(size)
            .filter(|&e| e <= bytes.len())
            .ok_or("chunk runs past the end of the file")?;
        if id == b"fmt " {
            if size < 16 {
                return Err("fmt chunk shorter than 16 bytes".into());
            }
            fmt = Some(&bytes[start..end]);
        }
        // Chunks are padded to an even length.
        pos = end + (size & 1);
    }
    Err("no data chunk".into())
}

/// Join WAV files of the same format into one, with correct RIFF and data sizes.
pub fn join_wavs(parts: &[Bytes]) -> Result<Bytes, String> {
    let wavs = parts
        .iter()
        .enumerate()
        .map(|(i, p)| parse_wav(p).map_err(|e| format!("part {}: {e}", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    let first = wavs.first().ok_or("nothing to join")?;
    // Format tag, channels, rate, byte rate, block align, bits: must all agree.
    if let Some(i) = wavs.iter().position(|w| w.fmt[..16] != first.fmt[..16]) {
        return Err(format!("part {} has a different audio format", i + 1));
    }
    let data_len: usize = wavs.iter().map(|w| w.data.len()).sum();
    let fmt_len = first.fmt.len();
    let fmt_pad = fmt_len & 1;
    let data_pad = data_len & 1;
    let riff_len = 4 + (8 + fmt_len + fmt_pad) + (8 + data_len + data_pad);
    let riff_len32 = u32::try_from(riff_len).map_err(|_| "joined audio exceeds 4 GiB")?;
    let mut out = BytesMut::with_capacity(8 + riff_len);
    out.put_slice(b"RIFF");
    out.put_u32_le(riff_len32);
    out.put_slice(b"WAVE");
    out.put_slice(b"fmt ");
    out.put_u32_le(fmt_len as u32);
    out.put_slice(first.fmt);
    if fmt_pad == 1 {
        out.put_u8(0);
    }
    out.put_slice(b"data");
    out.put_u32_le(data_len as u32);
    for w in &wavs {
        out.put_slice(w.data);
    }
    if data_pad == 1 {
        out.put_u8(0);
    }
    Ok(out.freeze())
}

/// Extension of audio bytes that are not WAV (a relay ignoring `response_format`).
fn sniff_audio_ext(bytes: &[u8], content_type: Option<&str>) -> Option<&'static str> {
    if let Some(ext) = content_type.and_then(http::ext_for_content_type) {
        return Some(ext);
    }
    if bytes.starts_with(b"ID3") || (bytes.len() > 1 && bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0)
    {
        return Some("mp3");
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Adapter
// ---------------------------------------------------------------------------------------------

impl OpenaiSpeech {
    pub fn new(client: reqwest::Client, acct: &AccountConfig, api_key: Option<Secret>) -> Self {
        OpenaiSpeech {
            client,
            base_url: acct.base_url.trim_end_matches('/').to_string(),
            model: acct.model.clone(),
            voice: acct.voice.clone().filter(|v| !v.trim().is_empty()),
            scrub: Scrubber::new([api_key.as_ref()]),
            api_key,
        }
    }

    fn auth(&self) -> Result<Option<http::Auth>, ProviderError> {
        http::auth_header("Bearer", self.api_key.as_ref())
    }

    /// One `/v1/audio/speech` call: the audio bytes and their content type.
    async fn speak(
        &self,
        input: &str,
        voice: &str,
        idempotency_key: &str,
    ) -> Result<(Bytes, Option<String>), ProviderError> {
        let mut body = json!({ "input": input, "voice": voice, "response_format": "wav" });
        if !self.model.is_empty() {
            body["model"] = json!(self.model);
        }
        let rb = self
            .client
            .post(http::join_url(&self.base_url, "/v1/audio/speech"))
            .header(IDEMPOTENCY_KEY, idempotency_key)
            .json(&body);
        // Audio, not JSON: the skeleton's answer is opened here.
        let http::Answer {
            status,
            headers,
            body: bytes,
        } = http::exchange(http::with_auth(rb, self.auth()?), AUDIO_BODY_CAP).await?;
        if !(200..300).contains(&status) {
            return Err(openai::error_from_response(
                status,
                &headers,
                &bytes,
                &self.scrub,
            ));
        }
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if content_type
            .as_deref()
            .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"))
        {
            // 200 with a JSON body is a relay reporting an error, not audio.
            let mut err = openai::error_from_response(500, &headers, &bytes, &self.scrub);
            err.http_status = Some(status);
            return Err(err);
        }
        if bytes.is_empty() {
            return Err(
                ProviderError::new(FailureClass::ProviderError, "success without output")
                    .with_code("empty_audio"),
            );
        }
        Ok((bytes, content_type))
    }
}

#[async_trait]
impl Provider for OpenaiSpeech {
    fn family(&self) -> Family {
        Family::OpenaiSpeech
    }

    async fn submit(&self, req: SubmitRequest<'_>) -> Result<SubmitOutcome, ProviderError> {
        let TaskPayload::Voice { text, voice, .. } = req.payload else {
            return Err(ProviderError::new(
                FailureClass::InvalidRequest,
                "openai-speech renders voice tasks only",
            ));
        };
        let voice = Some(voice.trim())
            .filter(|v| !v.is_empty())
            .or(self.voice.as_deref())
            .unwrap_or(DEFAULT_VOICE);
        let chunks = split_text(text, MAX_INPUT_CHARS);
        if chunks.is_empty() {
            return Err(ProviderError::new(
                FailureClass::InvalidRequest,
                "voice line has no text",
            ));
        }
        let mut parts = Vec::with_capacity(chunks.len());
        let mut content_type = None;
        for (i, chunk) in chunks.iter().enumerate() {
            // Distinct keys per piece: one key for different inputs would let an idempotent
            // server replay the first piece's audio for the others.
            let key = if i == 0 {
                req.task_id.to_string()
            } else {
                format!("{}:{}", req.task_id, i + 1)
            };
            let (bytes, ct) = self.speak(chunk, voice, &key).await?;
            content_type = content_type.or(ct);
            parts.push(bytes);
        }
        let single_non_wav = parts.len() == 1 && parse_wav(&parts[0]).is_err();
        if single_non_wav {
            // Keep what the relay sent (e.g. mp3 when it ignored response_format) under the right
            // extension rather than failing a paid render.
            let bytes = parts.remove(0);
            let ext = sniff_audio_ext(&bytes, content_type.as_deref()).unwrap_or("wav");
            return Ok(SubmitOutcome::Finished(SyncResult::Bytes {
                bytes,
                ext: ext.to_string(),
            }));
        }
        // Also for a single part: rewrites placeholder sizes of streamed WAVs.
        let joined = join_wavs(&parts).map_err(|e| {
            ProviderError::new(
                FailureClass::ProviderError,
                format!("cannot join speech audio: {e}"),
            )
            .with_code("bad_wav")
        })?;
        Ok(SubmitOutcome::Finished(SyncResult::Bytes {
            bytes: joined,
            ext: "wav".into(),
        }))
    }

    async fn poll(
        &self,
        _provider_task_id: &str,
        _poll_locator: Option<&str>,
    ) -> Result<PollOutcome, ProviderError> {
        Err(nothing_to_poll())
    }

    async fn fetch(&self, result: &ResultRef) -> Result<super::Download, ProviderError> {
        let auth = || self.auth();
        http::fetch_result(&self.client, result, &self.base_url, auth, &self.scrub).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::http::testing::{self, account, json, reply};

    fn squash(s: &str) -> String {
        s.split_whitespace().collect()
    }

    #[test]
    fn splitter_keeps_short_text_whole() {
        assert_eq!(split_text("  Hello there.  ", 4096), vec!["Hello there."]);
        assert!(split_text("   ", 4096).is_empty());
        let exact = "a".repeat(4096);
        assert_eq!(split_text(&exact, 4096), vec![exact.clone()]);
    }

    #[test]
    fn splitter_prefers_sentence_ends() {
        let text = "One two three. Four five six. Seven eight nine ten eleven.";
        let chunks = split_text(text, 35);
        assert_eq!(
            chunks,
            vec![
                "One two three. Four five six.",
                "Seven eight nine ten eleven."
            ]
        );
    }

    #[test]
    fn splitter_falls_back_to_whitespace_then_hard_cuts() {
        let chunks = split_text("alpha beta gamma delta epsilon", 12);
        assert_eq!(chunks, vec!["alpha beta", "gamma delta", "epsilon"]);
        let chunks = split_text(&"x".repeat(25), 10);
        assert_eq!(chunks, vec!["x".repeat(10), "x".repeat(10), "x".repeat(5)]);
        // A space right after the window still counts as a word boundary.
        assert_eq!(split_text("abcd efgh", 4), vec!["abcd", "efgh"]);
        // Decimal points are not sentence ends.
        assert_eq!(
            split_text("It costs 3.50 now ok", 14),
            vec!["It costs 3.50", "now ok"]
        );
    }

    #[test]
    fn splitter_handles_long_multibyte_text() {
        let sentence = "她走进雨里。Er sagte: „Schön!“ ";
        let text = sentence.repeat(400);
        let chunks = split_text(&text, MAX_INPUT_CHARS);
        assert!(chunks.len() >= 2);
        for c in &chunks {
            assert!(
                c.chars().count() <= MAX_INPUT_CHARS,
                "{}",
                c.chars().count()
            );
            assert!(!c.is_empty());
        }
        // Nothing lost or reordered (CJK pieces are cut without a space, so compare sans spaces).
        assert!(
            squash(&chunks.concat()) == squash(&text),
            "text changed by splitting"
        );
        // Each piece but the last ends a sentence.
        for c in &chunks[..chunks.len() - 1] {
            assert!(
                c.ends_with('。') || c.ends_with('“') || c.ends_with('!'),
                "{c:?}"
            );
        }
    }

    /// A 16-bit mono 24 kHz WAV with `samples`, optionally with a LIST chunk and odd-size fmt.
    fn wav(samples: &[i16], data_size: Option<u32>, with_list: bool) -> Bytes {
        let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&1u16.to_le_bytes()); // PCM
        fmt.extend_from_slice(&1u16.to_le_bytes()); // mono
        fmt.extend_from_slice(&24_000u32.to_le_bytes());
        fmt.extend_from_slice(&48_000u32.to_le_bytes());
        fmt.extend_from_slice(&2u16.to_le_bytes()); // block align
        fmt.extend_from_slice(&16u16.to_le_bytes());
        let mut body = Vec::new();
        body.extend_from_slice(b"WAVE");
        body.extend_from_slice(b"fmt ");
        body.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
        body.extend_from_slice(&fmt);
        if with_list {
            body.extend_from_slice(b"LIST");
            body.extend_from_slice(&3u32.to_le_bytes());
            body.extend_from_slice(b"abc\0"); // odd size + pad byte
        }
        body.extend_from_slice(b"data");
        body.extend_from_slice(&data_size.unwrap_or(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&data);
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        Bytes::from(out)
    }

    fn samples(w: &Wav<'_>) -> Vec<i16> {
        w.data
            .chunks(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn wav_join_concatenates_pcm_and_rewrites_sizes() {
        let a = wav(&[1, 2, 3], None, true);
        let b = wav(&[4, 5], Some(u32::MAX), false); // streamed placeholder size
        let joined = join_wavs(&[a, b]).expect("joined");
        let parsed = parse_wav(&joined).expect("parses");
        assert_eq!(samples(&parsed), vec![1, 2, 3, 4, 5]);
        assert_eq!(le_u32(&joined, 4), Some(joined.len() as u32 - 8));
        // 12 header + 8 + 16 fmt + 8 data header + 10 data
        assert_eq!(joined.len(), 12 + 24 + 8 + 10);
        assert_eq!(le_u32(&joined, 40), Some(10));
    }

    #[test]
    fn wav_parser_rejects_and_repairs() {
        assert!(parse_wav(b"ID3\x04garbage").is_err());
        assert!(parse_wav(b"RIFF\x00\x00\x00\x00WAVE").is_err());
        // A trailing half frame is dropped.
        let mut odd = wav(&[7, 8], Some(u32::MAX), false).to_vec();
        odd.push(0x42);
        let w = parse_wav(&odd).expect("parses");
        assert_eq!(samples(&w), vec![7, 8]);
        // Different formats cannot be joined.
        let mut stereo = wav(&[1, 2], None, false).to_vec();
        stereo[22] = 2;
        let err = join_wavs(&[wav(&[1], None, false), Bytes::from(stereo)]).expect_err("mismatch");
        assert!(err.contains("part 2"), "{err}");
        assert!(join_wavs(&[]).is_err());
    }

    fn adapter(base: &str) -> OpenaiSpeech {
        let acct = account("openai-speech", base, "model = \"tts-1\"\nvoice = \"nova\"");
        OpenaiSpeech::new(
            http::client(&acct),
            &acct,
            Some(Secret::new("sk-tts-0123456789abcdef")),
        )
    }

    #[tokio::test]
    async fn long_lines_are_split_and_joined() {
        let server = testing::serve(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            let n = v["input"].as_str().unwrap_or("").chars().count().min(100) as i16;
            reply(
                200,
                &[("content-type", "audio/wav")],
                wav(&[n, n], Some(u32::MAX), false),
            )
        })
        .await;
        let s = adapter(&server.base);
        let text = "This is one sentence of a long monologue. ".repeat(150); // ~6,300 chars
        let payload = TaskPayload::Voice {
            text: text.clone(),
            voice: String::new(),
            speaker: "mira".into(),
        };
        let out = s
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                attempt: 1,
                task_id: "voc-1",
                payload: &payload,
                first_frame: None,
            })
            .await
            .expect("finished");
        let SubmitOutcome::Finished(SyncResult::Bytes { bytes, ext }) = out else {
            panic!("expected bytes");
        };
        assert_eq!(ext, "wav");
        let reqs = server.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].header("idempotency-key").as_deref(), Some("voc-1"));
        assert_eq!(
            reqs[1].header("idempotency-key").as_deref(),
            Some("voc-1:2")
        );
        let mut total = 0;
        for r in &reqs {
            let v = r.json();
            assert_eq!(v["model"], "tts-1");
            assert_eq!(v["voice"], "nova"); // account default when the line names none
            assert_eq!(v["response_format"], "wav");
            let input = v["input"].as_str().expect("input");
            assert!(input.chars().count() <= MAX_INPUT_CHARS);
            total += input.chars().count();
        }
        assert!(total >= text.trim().chars().count() - 2);
        let parsed = parse_wav(&bytes).expect("joined wav");
        assert_eq!(samples(&parsed), vec![100, 100, 100, 100]);
    }

    #[tokio::test]
    async fn speech_errors() {
        let server = testing::serve(|r| {
            let body = String::from_utf8_lossy(&r.body).to_string();
            if body.contains("slow") {
                reply(
                    429,
                    &[("content-type", "application/json"), ("retry-after", "2")],
                    json!({"error":{"message":"Rate limit reached","code":"rate_limit_exceeded"}})
                        .to_string(),
                )
            } else if body.contains("json200") {
                json(200, json!({"error":{"message":"upstream failed"}}))
            } else {
                reply(200, &[("content-type", "audio/mpeg")], "ID3mp3data")
            }
        })
        .await;
        let s = adapter(&server.base);
        let voice = |t: &str| TaskPayload::Voice {
            text: t.into(),
            voice: "onyx".into(),
            speaker: "x".into(),
        };
        let p = voice("too slow");
        let err = s
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                attempt: 1,
                task_id: "voc-2",
                payload: &p,
                first_frame: None,
            })
            .await
            .expect_err("429");
        assert_eq!(err.class, FailureClass::RateLimited);
        assert_eq!(err.retry_after, Some(std::time::Duration::from_secs(2)));
        let p = voice("json200");
        let err = s
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                attempt: 1,
                task_id: "voc-3",
                payload: &p,
                first_frame: None,
            })
            .await
            .expect_err("json error");
        assert_eq!(err.class, FailureClass::ProviderError);
        let p = voice("mp3 please");
        match s
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                attempt: 1,
                task_id: "voc-4",
                payload: &p,
                first_frame: None,
            })
            .await
        {
            Ok(SubmitOutcome::Finished(SyncResult::Bytes { ext, .. })) => assert_eq!(ext, "mp3"),
            other => panic!("{other:?}"),
        }
        assert_eq!(server.requests()[2].json()["voice"], "onyx");
        let p = voice("  ");
        let err = s
            .submit(SubmitRequest {
                season: "s",
                group: "g",
                deps: &[],
                attempt: 1,
                task_id: "voc-5",
                payload: &p,
                first_frame: None,
            })
            .await
            .expect_err("empty");
        assert_eq!(err.class, FailureClass::InvalidRequest);
        assert!(s.poll("x", None).await.is_err());
    }
}
