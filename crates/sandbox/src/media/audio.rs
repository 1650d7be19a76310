//! Speech stand-ins: a soft tone as WAV or raw PCM, and silence as MP3.
//!
//! OpenAI's speech endpoint returns 24 kHz mono for `wav` and `pcm`; the sandbox does the same.
//! MP3 output is a run of valid MPEG-1 Layer III frames whose side information is all zero,
//! which every decoder plays as silence, preceded by an ID3v2 tag that carries the tag text.

use super::mix;

/// Sample rate of `wav` and `pcm` output (matches OpenAI's speech output).
pub const SPEECH_SAMPLE_RATE: u32 = 24_000;

/// What to synthesise.
pub struct AudioSpec<'a> {
    /// Length of the clip.
    pub duration_ms: u32,
    /// Unique text embedded in the file; also picks the tone's pitch.
    pub tag: &'a str,
}

/// Signed 16-bit little-endian mono samples of a quiet tone with short fades.
fn tone_samples(spec: &AudioSpec<'_>) -> Vec<u8> {
    let n = (u64::from(SPEECH_SAMPLE_RATE) * u64::from(spec.duration_ms) / 1000) as usize;
    let freq = 180.0 + (mix(1, &[spec.tag.as_bytes()]) % 240) as f64;
    let fade = (SPEECH_SAMPLE_RATE / 50) as usize; // 20 ms
    let mut out = Vec::with_capacity(n * 2);
    for i in 0..n {
        let t = i as f64 / f64::from(SPEECH_SAMPLE_RATE);
        let env = (i.min(n - 1 - i) as f64 / fade as f64).min(1.0);
        let v = (t * freq * std::f64::consts::TAU).sin() * 3000.0 * env;
        out.extend_from_slice(&(v as i16).to_le_bytes());
    }
    out
}

/// Raw PCM (`response_format: "pcm"`): 24 kHz, 16-bit signed little-endian, mono, no header.
pub fn pcm_tone(spec: &AudioSpec<'_>) -> Vec<u8> {
    tone_samples(spec)
}

/// A RIFF/WAVE file: `fmt ` (PCM, mono, 16-bit, 24 kHz), `data`, and a `LIST/INFO/ICMT`
/// chunk with the tag.
pub fn wav_tone(spec: &AudioSpec<'_>) -> Vec<u8> {
    let data = tone_samples(spec);
    let mut comment: Vec<u8> = spec.tag.bytes().collect();
    comment.push(0);
    if comment.len() % 2 == 1 {
        comment.push(0);
    }
    let list_len = 4 + 8 + comment.len();
    let riff_len = 4 + (8 + 16) + (8 + data.len()) + (8 + list_len);

    let mut out = Vec::with_capacity(riff_len + 8);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(riff_len as u32).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&SPEECH_SAMPLE_RATE.to_le_bytes());
    out.extend_from_slice(&(SPEECH_SAMPLE_RATE * 2).to_le_bytes()); // byte rate
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out.extend_from_slice(b"LIST");
    out.extend_from_slice(&(list_len as u32).to_le_bytes());
    out.extend_from_slice(b"INFO");
    out.extend_from_slice(b"ICMT");
    out.extend_from_slice(&(comment.len() as u32).to_le_bytes());
    out.extend_from_slice(&comment);
    out
}

/// Parsed essentials of a WAV file, from [`inspect_wav`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WavInfo {
    pub channels: u16,
    pub sample_rate: u32,
    pub bits_per_sample: u16,
    pub data_len: u32,
}

/// Checks the RIFF framing (declared sizes equal the real ones, chunks tile the file) and
/// returns the format. Used by the tests.
pub fn inspect_wav(bytes: &[u8]) -> Result<WavInfo, String> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let riff_len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if riff_len + 8 != bytes.len() {
        return Err(format!(
            "RIFF size {riff_len} does not match file length {}",
            bytes.len()
        ));
    }
    let mut pos = 12;
    let mut fmt = None;
    let mut data_len = None;
    while pos < bytes.len() {
        let h = bytes.get(pos..pos + 8).ok_or("truncated chunk header")?;
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let body = bytes
            .get(pos + 8..pos + 8 + len)
            .ok_or("chunk overruns file")?;
        match &h[..4] {
            b"fmt " if len >= 16 => {
                let format = u16::from_le_bytes([body[0], body[1]]);
                let channels = u16::from_le_bytes([body[2], body[3]]);
                let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
                let byte_rate = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
                let align = u16::from_le_bytes([body[12], body[13]]);
                let bits = u16::from_le_bytes([body[14], body[15]]);
                if format != 1 {
                    return Err("not PCM".into());
                }
                if u32::from(align) != u32::from(channels) * u32::from(bits) / 8
                    || byte_rate != rate * u32::from(align)
                {
                    return Err("inconsistent fmt chunk".into());
                }
                fmt = Some((channels, rate, bits, align));
            }
            b"data" => data_len = Some(len as u32),
            _ => {}
        }
        pos += 8 + len + (len % 2);
    }
    let (channels, sample_rate, bits_per_sample, align) = fmt.ok_or("no fmt chunk")?;
    let data_len = data_len.ok_or("no data chunk")?;
    if data_len % u32::from(align) != 0 {
        return Err("data length is not a whole number of frames".into());
    }
    Ok(WavInfo {
        channels,
        sample_rate,
        bits_per_sample,
        data_len,
    })
}

/// MPEG-1 Layer III, 32 kbit/s, 44.1 kHz, mono: 104-byte frames of 1152 samples.
const MP3_FRAME_HEADER: [u8; 4] = [0xff, 0xfb, 0x10, 0xc0];
const MP3_FRAME_LEN: usize = 104;
const MP3_SAMPLES_PER_FRAME: u64 = 1152;
const MP3_SAMPLE_RATE: u64 = 44_100;

/// An MP3 of silence lasting about `duration_ms`, with an ID3v2.4 tag (`TSSE`) holding the tag.
pub fn mp3_silence(spec: &AudioSpec<'_>) -> Vec<u8> {
    let frames = (u64::from(spec.duration_ms) * MP3_SAMPLE_RATE)
        .div_ceil(MP3_SAMPLES_PER_FRAME * 1000)
        .max(1) as usize;
    let mut text = vec![3u8]; // UTF-8
    text.extend_from_slice(format!("dramaq-sandbox {}", spec.tag).as_bytes());
    let mut frame = b"TSSE".to_vec();
    frame.extend_from_slice(&synchsafe(text.len() as u32));
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(&text);

    let mut out = Vec::with_capacity(10 + frame.len() + frames * MP3_FRAME_LEN);
    out.extend_from_slice(b"ID3");
    out.extend_from_slice(&[4, 0, 0]);
    out.extend_from_slice(&synchsafe(frame.len() as u32));
    out.extend_from_slice(&frame);
    for _ in 0..frames {
        out.extend_from_slice(&MP3_FRAME_HEADER);
        out.resize(out.len() + MP3_FRAME_LEN - 4, 0);
    }
    out
}

fn synchsafe(v: u32) -> [u8; 4] {
    [
        ((v >> 21) & 0x7f) as u8,
        ((v >> 14) & 0x7f) as u8,
        ((v >> 7) & 0x7f) as u8,
        (v & 0x7f) as u8,
    ]
}
