//! Real, structurally valid media bytes for the results the sandbox hands out.
//!
//! Clients under test download, checksum and store what a provider returns, and some of them
//! sniff or probe the files. Handing them random bytes would hide bugs (wrong extension, wrong
//! content type, truncated downloads), so every result here is a genuine file: an MP4 with a
//! decodable H.264 track, a PNG, a WAV, an MP3 of silence or raw PCM. Everything is built by hand
//! from small encoders so the sandbox needs no codec libraries; all output is deterministic for a
//! given input, and each builder takes a `tag` that is embedded in the file so two jobs never
//! produce the same checksum.

mod audio;
mod bits;
mod checksum;
mod deflate;
mod h264;
mod mp4;
mod png;

pub use audio::{
    inspect_wav, mp3_silence, pcm_tone, wav_tone, AudioSpec, WavInfo, SPEECH_SAMPLE_RATE,
};
pub use checksum::{adler32, crc32};
pub use mp4::{inspect_mp4, mp4_video, BoxInfo, VideoSpec};
pub use png::{inspect_png, png_solid, PNG_SIGNATURE};

/// Picks a stable pseudo-random value from a seed and some bytes (FNV-1a followed by a
/// splitmix64 finaliser). Used wherever the sandbox needs "random but reproducible".
pub fn mix(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix(h)
}

/// The splitmix64 finaliser: spreads the bits of `x` over the whole word.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Maps a hash to a uniform float in `[0, 1)`.
pub fn unit_f64(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A colour derived from a hash, kept away from the extremes so it is visibly a colour.
pub fn colour_from(h: u64) -> [u8; 3] {
    let b = h.to_le_bytes();
    [40 + b[0] % 176, 40 + b[1] % 176, 40 + b[2] % 176]
}
