//! PNG encoder for solid-colour RGB images (the sandbox's "generated" images).
//!
//! The file is a real PNG at the requested dimensions: signature, IHDR, a tEXt chunk carrying
//! the generation's tag (so every image has its own checksum), one zlib-compressed IDAT and
//! IEND, all with correct CRCs.

use super::checksum::{crc32, crc32_update};
use super::deflate::zlib_compress;

/// The eight bytes every PNG starts with.
pub const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

/// Builds a `width`×`height` 8-bit RGB PNG filled with `rgb`, with `tag` in a tEXt comment.
pub fn png_solid(width: u32, height: u32, rgb: [u8; 3], tag: &str) -> Vec<u8> {
    let width = width.max(1);
    let height = height.max(1);
    let row_len = 1 + 3 * width as usize;
    // Each row: filter type None (0), then the pixels.
    let mut row = Vec::with_capacity(row_len);
    row.push(0);
    for _ in 0..width {
        row.extend_from_slice(&rgb);
    }
    let raw = row.repeat(height as usize);
    let idat = zlib_compress(&raw, &[3, row_len]);

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // depth 8, truecolour, deflate, filter 0, no interlace

    let mut text = b"Comment\0".to_vec();
    text.extend(tag.bytes().filter(|b| (0x20..0x7f).contains(b)));

    let mut out = PNG_SIGNATURE.to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"tEXt", &text);
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32_update(crc32_update(0xffff_ffff, kind), data) ^ 0xffff_ffff;
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Walks the chunks of a PNG and checks signature, CRCs and the IHDR/IEND framing.
/// Returns `(width, height, chunk names)`. Used by the tests and handy for clients' tests too.
pub fn inspect_png(bytes: &[u8]) -> Result<(u32, u32, Vec<String>), String> {
    if bytes.len() < 8 || bytes[..8] != PNG_SIGNATURE {
        return Err("missing PNG signature".into());
    }
    let mut pos = 8;
    let mut names = Vec::new();
    let mut dims = None;
    while pos < bytes.len() {
        let header = bytes.get(pos..pos + 8).ok_or("truncated chunk header")?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = &header[4..8];
        let data = bytes
            .get(pos + 8..pos + 8 + len)
            .ok_or("truncated chunk data")?;
        let crc_bytes = bytes
            .get(pos + 8 + len..pos + 12 + len)
            .ok_or("truncated chunk crc")?;
        let stored = u32::from_be_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
        let mut covered = kind.to_vec();
        covered.extend_from_slice(data);
        if crc32(&covered) != stored {
            return Err(format!(
                "bad CRC in chunk {}",
                String::from_utf8_lossy(kind)
            ));
        }
        if kind == b"IHDR" {
            if data.len() != 13 {
                return Err("IHDR must be 13 bytes".into());
            }
            dims = Some((
                u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
                u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
            ));
        }
        names.push(String::from_utf8_lossy(kind).into_owned());
        pos += 12 + len;
    }
    if names.first().map(String::as_str) != Some("IHDR") {
        return Err("first chunk is not IHDR".into());
    }
    if names.last().map(String::as_str) != Some("IEND") {
        return Err("last chunk is not IEND".into());
    }
    let (w, h) = dims.ok_or("no IHDR")?;
    Ok((w, h, names))
}
