//! Bit writers for the two bit orders the encoders need.
//!
//! Deflate packs bits starting from the least significant bit of each byte; H.264 writes
//! most-significant-bit first and adds Exp-Golomb codes. Both are tiny, so they live together.

/// LSB-first bit writer (deflate).
#[derive(Default)]
pub(crate) struct LsbWriter {
    pub(crate) out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl LsbWriter {
    /// Appends the low `count` bits of `value`, least significant first.
    pub(crate) fn put(&mut self, value: u32, count: u32) {
        debug_assert!(count <= 32);
        self.acc |= u64::from(value) << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// Appends a Huffman code, which deflate stores most significant bit first.
    pub(crate) fn put_code(&mut self, code: u32, len: u32) {
        let reversed = code.reverse_bits() >> (32 - len);
        self.put(reversed, len);
    }

    /// Pads to a byte boundary with zero bits and returns the bytes.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// MSB-first bit writer with Exp-Golomb helpers (H.264 RBSP).
#[derive(Default)]
pub(crate) struct MsbWriter {
    pub(crate) out: Vec<u8>,
    cur: u8,
    n: u32,
}

impl MsbWriter {
    pub(crate) fn bit(&mut self, b: bool) {
        self.cur = (self.cur << 1) | u8::from(b);
        self.n += 1;
        if self.n == 8 {
            self.out.push(self.cur);
            self.cur = 0;
            self.n = 0;
        }
    }

    /// Appends the low `count` bits of `value`, most significant first.
    pub(crate) fn bits(&mut self, value: u32, count: u32) {
        for i in (0..count).rev() {
            self.bit((value >> i) & 1 == 1);
        }
    }

    /// Unsigned Exp-Golomb code, `ue(v)`.
    pub(crate) fn ue(&mut self, v: u32) {
        let x = u64::from(v) + 1;
        let len = 64 - x.leading_zeros();
        for _ in 0..len - 1 {
            self.bit(false);
        }
        for i in (0..len).rev() {
            self.bit((x >> i) & 1 == 1);
        }
    }

    /// Signed Exp-Golomb code, `se(v)`.
    pub(crate) fn se(&mut self, v: i32) {
        let k = if v > 0 {
            (v as u32) * 2 - 1
        } else {
            v.unsigned_abs() * 2
        };
        self.ue(k);
    }

    pub(crate) fn is_aligned(&self) -> bool {
        self.n == 0
    }

    /// Zero bits up to the next byte boundary (e.g. `pcm_alignment_zero_bit`).
    pub(crate) fn align_zero(&mut self) {
        while !self.is_aligned() {
            self.bit(false);
        }
    }

    /// Whole bytes; only valid when aligned.
    pub(crate) fn bytes(&mut self, data: &[u8]) {
        debug_assert!(self.is_aligned());
        self.out.extend_from_slice(data);
    }

    /// `rbsp_trailing_bits`: a one bit, then zeros to the byte boundary.
    pub(crate) fn trailing(mut self) -> Vec<u8> {
        self.bit(true);
        self.align_zero();
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb() {
        let mut w = MsbWriter::default();
        w.ue(0); // 1
        w.ue(1); // 010
        w.ue(2); // 011
        w.se(-1); // ue(2) = 011
        assert_eq!(w.trailing(), vec![0b1010_0110, 0b1110_0000]);
    }

    #[test]
    fn lsb_order() {
        let mut w = LsbWriter::default();
        w.put(1, 1);
        w.put(1, 2);
        w.put_code(0b110, 3);
        assert_eq!(w.finish(), vec![0b0001_1011]);
    }
}
