//! ISO BMFF (MP4) muxer for the sandbox's rendered videos.
//!
//! Layout: `ftyp`, `moov` (one `avc1` video track, sample tables pointing into `mdat`; with
//! [`VideoSpec::sound`] a second, `sowt` (16-bit PCM) sound track: a soft tone, as models that
//! render their own sound deliver), a `free` box carrying the job's tag, then `mdat`. The picture
//! is tiny (a few macroblocks) but keeps the aspect ratio of the requested size, and the duration
//! matches the requested seconds at 24 frames per second.

use super::h264::{self, StreamParams};
use super::{colour_from, mix};

/// What to render.
pub struct VideoSpec<'a> {
    /// Requested output width and height in pixels (only the aspect ratio is kept).
    pub width: u32,
    pub height: u32,
    /// Clip length in seconds.
    pub seconds: u32,
    /// Bytes embedded in the file and used to derive the colour: makes each job unique.
    pub tag: &'a str,
    /// Add a sound track (a tone for the whole clip).
    pub sound: bool,
}

const FPS: u32 = 24;
const TIMESCALE: u32 = 12_288;
const SAMPLE_DELTA: u32 = TIMESCALE / FPS;

/// Builds the MP4 file.
pub fn mp4_video(spec: &VideoSpec<'_>) -> Vec<u8> {
    let params = StreamParams {
        width_mbs: scaled_mbs(spec.width),
        height_mbs: scaled_mbs(spec.height),
    };
    let pixel_w = params.width_mbs * 16;
    let pixel_h = params.height_mbs * 16;
    let frames = spec.seconds.clamp(1, 600) * FPS;
    let h = mix(0, &[spec.tag.as_bytes()]);
    let ycbcr = h264::rgb_to_ycbcr(colour_from(h));
    let sps = h264::sps(&params);
    let pps = h264::pps();

    let mut samples: Vec<Vec<u8>> = Vec::with_capacity(frames as usize);
    samples.push(length_prefixed(&h264::idr_pcm(
        &params,
        ycbcr,
        spec.tag.as_bytes(),
    )));
    for i in 1..frames {
        samples.push(length_prefixed(&h264::p_skip(&params, i)));
    }
    let sizes: Vec<u32> = samples.iter().map(|s| s.len() as u32).collect();
    let duration_ms = u64::from(frames) * 1000 / u64::from(FPS);

    let ftyp = boxed(b"ftyp", &{
        let mut b = Vec::new();
        b.extend_from_slice(b"isom");
        b.extend_from_slice(&0x200u32.to_be_bytes());
        for brand in [b"isom", b"iso2", b"avc1", b"mp41"] {
            b.extend_from_slice(brand);
        }
        b
    });
    let free = boxed(b"free", format!("dramaq-sandbox {}", spec.tag).as_bytes());
    let track = TrackInfo {
        width: pixel_w,
        height: pixel_h,
        duration_ms: duration_ms as u32,
        frames,
        sps: &sps,
        pps: &pps,
        sizes: &sizes,
    };
    let pcm = if spec.sound {
        super::audio::pcm_tone(&super::audio::AudioSpec {
            duration_ms: duration_ms as u32,
            tag: spec.tag,
        })
    } else {
        Vec::new()
    };
    let video_len: usize = samples.iter().map(Vec::len).sum();
    // The chunk offsets depend on the size of moov, which does not depend on the offset values.
    let probe = moov(&track, 0, &pcm, 0);
    let mdat_payload_offset = (ftyp.len() + probe.len() + free.len() + 8) as u32;
    let moov = moov(
        &track,
        mdat_payload_offset,
        &pcm,
        mdat_payload_offset + video_len as u32,
    );
    samples.push(pcm);
    let mdat_len: usize = samples.iter().map(Vec::len).sum();

    let mut out = Vec::with_capacity(ftyp.len() + moov.len() + free.len() + 8 + mdat_len);
    out.extend_from_slice(&ftyp);
    out.extend_from_slice(&moov);
    out.extend_from_slice(&free);
    out.extend_from_slice(&((mdat_len + 8) as u32).to_be_bytes());
    out.extend_from_slice(b"mdat");
    for s in &samples {
        out.extend_from_slice(s);
    }
    out
}

/// Macroblocks along one side: roughly 1/256 of the requested pixels, at least one.
fn scaled_mbs(pixels: u32) -> u32 {
    ((pixels + 128) / 256).clamp(1, 16)
}

struct TrackInfo<'a> {
    width: u32,
    height: u32,
    duration_ms: u32,
    frames: u32,
    sps: &'a [u8],
    pps: &'a [u8],
    sizes: &'a [u32],
}

fn length_prefixed(nal: &[u8]) -> Vec<u8> {
    let mut v = (nal.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(nal);
    v
}

fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 8);
    v.extend_from_slice(&((payload.len() + 8) as u32).to_be_bytes());
    v.extend_from_slice(kind);
    v.extend_from_slice(payload);
    v
}

fn full_box(kind: &[u8; 4], version: u8, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(payload.len() + 4);
    p.push(version);
    p.extend_from_slice(&flags.to_be_bytes()[1..]);
    p.extend_from_slice(payload);
    boxed(kind, &p)
}

fn container(kind: &[u8; 4], children: &[Vec<u8>]) -> Vec<u8> {
    boxed(kind, &children.concat())
}

struct Be(Vec<u8>);

impl Be {
    fn new() -> Self {
        Be(Vec::new())
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn raw(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    fn zeros(mut self, n: usize) -> Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    fn matrix(self) -> Self {
        self.u32(0x0001_0000)
            .u32(0)
            .u32(0)
            .u32(0)
            .u32(0x0001_0000)
            .u32(0)
            .u32(0)
            .u32(0)
            .u32(0x4000_0000)
    }
}

fn moov(t: &TrackInfo<'_>, chunk_offset: u32, pcm: &[u8], pcm_offset: u32) -> Vec<u8> {
    let mvhd = full_box(
        b"mvhd",
        0,
        0,
        &Be::new()
            .u32(0) // creation_time
            .u32(0) // modification_time
            .u32(1000) // timescale
            .u32(t.duration_ms)
            .u32(0x0001_0000) // rate 1.0
            .u16(0x0100) // volume 1.0
            .zeros(10)
            .matrix()
            .zeros(24) // pre_defined
            .u32(3) // next_track_ID
            .0,
    );
    let tkhd = tkhd(1, t.duration_ms, 0, (t.width, t.height));
    let mdhd = mdhd(TIMESCALE, t.frames * SAMPLE_DELTA);
    let hdlr = hdlr(b"vide", b"VideoHandler\0");
    let vmhd = full_box(b"vmhd", 0, 1, &Be::new().zeros(8).0);
    let dinf = dinf();

    let avcc = boxed(
        b"avcC",
        &Be::new()
            .u8(1)
            .u8(h264::PROFILE_IDC)
            .u8(h264::CONSTRAINT_FLAGS)
            .u8(h264::LEVEL_IDC)
            .u8(0xff) // 4-byte NAL lengths
            .u8(0xe1) // one SPS
            .u16(t.sps.len() as u16)
            .raw(t.sps)
            .u8(1) // one PPS
            .u16(t.pps.len() as u16)
            .raw(t.pps)
            .0,
    );
    let mut compressor = [0u8; 32];
    let name = b"dramaq-sandbox";
    compressor[0] = name.len() as u8;
    compressor[1..=name.len()].copy_from_slice(name);
    let avc1 = boxed(
        b"avc1",
        &Be::new()
            .zeros(6)
            .u16(1) // data_reference_index
            .u16(0)
            .u16(0)
            .zeros(12)
            .u16(t.width as u16)
            .u16(t.height as u16)
            .u32(0x0048_0000) // 72 dpi
            .u32(0x0048_0000)
            .u32(0)
            .u16(1) // frame_count
            .raw(&compressor)
            .u16(0x0018) // depth
            .u16(0xffff) // pre_defined = -1
            .raw(&avcc)
            .0,
    );
    let stsd = full_box(b"stsd", 0, 0, &Be::new().u32(1).raw(&avc1).0);
    let stts = full_box(
        b"stts",
        0,
        0,
        &Be::new().u32(1).u32(t.frames).u32(SAMPLE_DELTA).0,
    );
    let stss = full_box(b"stss", 0, 0, &Be::new().u32(1).u32(1).0);
    let stsc = full_box(
        b"stsc",
        0,
        0,
        &Be::new().u32(1).u32(1).u32(t.frames).u32(1).0,
    );
    let mut stsz_body = Be::new().u32(0).u32(t.sizes.len() as u32);
    for &s in t.sizes {
        stsz_body = stsz_body.u32(s);
    }
    let stsz = full_box(b"stsz", 0, 0, &stsz_body.0);
    let stco = full_box(b"stco", 0, 0, &Be::new().u32(1).u32(chunk_offset).0);
    let stbl = container(b"stbl", &[stsd, stts, stss, stsc, stsz, stco]);
    let minf = container(b"minf", &[vmhd, dinf, stbl]);
    let mdia = container(b"mdia", &[mdhd, hdlr, minf]);
    let trak = container(b"trak", &[tkhd, mdia]);
    if pcm.is_empty() {
        return container(b"moov", &[mvhd, trak]);
    }
    container(
        b"moov",
        &[mvhd, trak, sound_trak(t.duration_ms, pcm.len(), pcm_offset)],
    )
}

/// A track header: enabled and in the movie; sound tracks (volume 1.0) form alternate group 1.
fn tkhd(track_id: u32, duration_ms: u32, volume: u16, (width, height): (u32, u32)) -> Vec<u8> {
    full_box(
        b"tkhd",
        0,
        3, // enabled, in movie
        &Be::new()
            .u32(0) // creation_time
            .u32(0) // modification_time
            .u32(track_id)
            .u32(0)
            .u32(duration_ms)
            .zeros(8)
            .u16(0) // layer
            .u16(u16::from(volume != 0)) // alternate_group
            .u16(volume)
            .u16(0)
            .matrix()
            .u32(width << 16)
            .u32(height << 16)
            .0,
    )
}

fn mdhd(timescale: u32, duration: u32) -> Vec<u8> {
    full_box(
        b"mdhd",
        0,
        0,
        &Be::new()
            .u32(0)
            .u32(0)
            .u32(timescale)
            .u32(duration)
            .u16(0x55c4) // language "und"
            .u16(0)
            .0,
    )
}

fn hdlr(kind: &[u8; 4], name: &[u8]) -> Vec<u8> {
    full_box(
        b"hdlr",
        0,
        0,
        &Be::new().u32(0).raw(kind).zeros(12).raw(name).0,
    )
}

/// Data in this same file.
fn dinf() -> Vec<u8> {
    let dref = full_box(
        b"dref",
        0,
        0,
        &Be::new().u32(1).raw(&full_box(b"url ", 0, 1, &[])).0,
    );
    container(b"dinf", &[dref])
}

/// The sound track: mono 16-bit little-endian PCM (`sowt`) at the speech sample rate, all in one
/// chunk at `offset`.
fn sound_trak(duration_ms: u32, pcm_len: usize, offset: u32) -> Vec<u8> {
    let rate = super::audio::SPEECH_SAMPLE_RATE;
    let samples = (pcm_len / 2) as u32;
    let tkhd = tkhd(2, duration_ms, 0x0100, (0, 0));
    let mdhd = mdhd(rate, samples);
    let hdlr = hdlr(b"soun", b"SoundHandler\0");
    let smhd = full_box(b"smhd", 0, 0, &Be::new().zeros(4).0);
    let dinf = dinf();
    let sowt = boxed(
        b"sowt",
        &Be::new()
            .zeros(6)
            .u16(1) // data_reference_index
            .u16(0) // version
            .u16(0) // revision
            .u32(0) // vendor
            .u16(1) // channels
            .u16(16) // bits per sample
            .u16(0) // compression id
            .u16(0) // packet size
            .u32(rate << 16)
            .0,
    );
    let stsd = full_box(b"stsd", 0, 0, &Be::new().u32(1).raw(&sowt).0);
    let stts = full_box(b"stts", 0, 0, &Be::new().u32(1).u32(samples).u32(1).0);
    let stsc = full_box(
        b"stsc",
        0,
        0,
        &Be::new().u32(1).u32(1).u32(samples).u32(1).0,
    );
    let stsz = full_box(b"stsz", 0, 0, &Be::new().u32(2).u32(samples).0);
    let stco = full_box(b"stco", 0, 0, &Be::new().u32(1).u32(offset).0);
    let stbl = container(b"stbl", &[stsd, stts, stsc, stsz, stco]);
    let minf = container(b"minf", &[smhd, dinf, stbl]);
    let mdia = container(b"mdia", &[mdhd, hdlr, minf]);
    container(b"trak", &[tkhd, mdia])
}

/// One box found by [`inspect_mp4`]: its path (e.g. `moov/trak/tkhd`) and total size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxInfo {
    pub path: String,
    pub size: u64,
}

/// Walks the box tree of an MP4 and checks that every box's size fits its parent exactly.
/// Descends into the usual containers. Returns the boxes in file order.
pub fn inspect_mp4(bytes: &[u8]) -> Result<Vec<BoxInfo>, String> {
    let mut out = Vec::new();
    walk(bytes, "", &mut out)?;
    if out.first().map(|b| b.path.as_str()) != Some("ftyp") {
        return Err("file does not start with ftyp".into());
    }
    Ok(out)
}

fn walk(bytes: &[u8], prefix: &str, out: &mut Vec<BoxInfo>) -> Result<(), String> {
    const CONTAINERS: [&str; 7] = ["moov", "trak", "mdia", "minf", "dinf", "stbl", "udta"];
    let mut pos = 0usize;
    while pos < bytes.len() {
        let header = bytes
            .get(pos..pos + 8)
            .ok_or_else(|| format!("truncated box header at {prefix}+{pos}"))?;
        let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = String::from_utf8_lossy(&header[4..8]).into_owned();
        if size < 8 || pos + size > bytes.len() {
            return Err(format!("box {prefix}{kind} has bad size {size}"));
        }
        let path = format!("{prefix}{kind}");
        out.push(BoxInfo {
            path: path.clone(),
            size: size as u64,
        });
        if CONTAINERS.contains(&kind.as_str()) {
            walk(&bytes[pos + 8..pos + size], &format!("{path}/"), out)?;
        }
        pos += size;
    }
    Ok(())
}
