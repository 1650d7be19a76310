//! A small zlib/deflate encoder (fixed Huffman codes, greedy matching at hinted distances).
//!
//! Generated images are large but extremely regular (solid colours, repeated rows), so a full
//! LZ77 search is unnecessary: trying a handful of caller-supplied distances (one pixel back,
//! one row back) already compresses them by two to three orders of magnitude.

use super::bits::LsbWriter;
use super::checksum::adler32;

const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
const MAX_MATCH: usize = 258;
const MIN_MATCH: usize = 3;
const WINDOW: usize = 32_768;

/// Wraps `data` in a zlib stream (RFC 1950) whose body is one fixed-Huffman deflate block.
/// `distances` are the back-references worth trying at every position.
pub(crate) fn zlib_compress(data: &[u8], distances: &[usize]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    out.extend_from_slice(&deflate_fixed(data, distances));
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

/// Raw deflate (RFC 1951): a single final block with the fixed code tables.
pub(crate) fn deflate_fixed(data: &[u8], distances: &[usize]) -> Vec<u8> {
    let mut w = LsbWriter::default();
    w.put(1, 1); // BFINAL
    w.put(1, 2); // BTYPE = 01, fixed Huffman
    let mut i = 0;
    while i < data.len() {
        let mut best = (0usize, 0usize);
        for &d in distances {
            if d == 0 || d > i || d > WINDOW {
                continue;
            }
            let max = MAX_MATCH.min(data.len() - i);
            let mut len = 0;
            while len < max && data[i + len] == data[i + len - d] {
                len += 1;
            }
            if len > best.0 {
                best = (len, d);
            }
        }
        if best.0 >= MIN_MATCH {
            put_length(&mut w, best.0);
            put_distance(&mut w, best.1);
            i += best.0;
        } else {
            put_symbol(&mut w, u32::from(data[i]));
            i += 1;
        }
    }
    put_symbol(&mut w, 256);
    w.finish()
}

fn put_symbol(w: &mut LsbWriter, sym: u32) {
    match sym {
        0..=143 => w.put_code(0x30 + sym, 8),
        144..=255 => w.put_code(0x190 + (sym - 144), 9),
        256..=279 => w.put_code(sym - 256, 7),
        _ => w.put_code(0xc0 + (sym - 280), 8),
    }
}

fn put_length(w: &mut LsbWriter, len: usize) {
    let idx = LEN_BASE
        .iter()
        .rposition(|&b| usize::from(b) <= len)
        .unwrap_or(0);
    put_symbol(w, 257 + idx as u32);
    let extra = u32::from(LEN_EXTRA[idx]);
    if extra > 0 {
        w.put((len - usize::from(LEN_BASE[idx])) as u32, extra);
    }
}

fn put_distance(w: &mut LsbWriter, dist: usize) {
    let idx = DIST_BASE
        .iter()
        .rposition(|&b| usize::from(b) <= dist)
        .unwrap_or(0);
    w.put_code(idx as u32, 5);
    let extra = u32::from(DIST_EXTRA[idx]);
    if extra > 0 {
        w.put((dist - usize::from(DIST_BASE[idx])) as u32, extra);
    }
}
