//! A minimal H.264 (Constrained Baseline) bitstream writer: one I_PCM IDR frame, then P
//! frames made only of skipped macroblocks.
//!
//! I_PCM macroblocks carry raw samples, so no transform or entropy coding is needed, and an
//! all-skip P frame is a few bytes. Together that gives a decodable clip of a solid colour
//! whose length in frames is whatever the caller asks for.

use super::bits::MsbWriter;

/// The stream parameters shared by SPS, PPS and slices.
pub(crate) struct StreamParams {
    pub(crate) width_mbs: u32,
    pub(crate) height_mbs: u32,
}

pub(crate) const PROFILE_IDC: u8 = 66;
pub(crate) const CONSTRAINT_FLAGS: u8 = 0xc0; // constraint_set0 + constraint_set1: constrained baseline
pub(crate) const LEVEL_IDC: u8 = 30;
const LOG2_MAX_FRAME_NUM: u32 = 4;

/// Sequence parameter set NAL unit (header byte included, emulation prevention applied).
pub(crate) fn sps(p: &StreamParams) -> Vec<u8> {
    let mut w = MsbWriter::default();
    w.bits(u32::from(PROFILE_IDC), 8);
    w.bits(u32::from(CONSTRAINT_FLAGS), 8);
    w.bits(u32::from(LEVEL_IDC), 8);
    w.ue(0); // seq_parameter_set_id
    w.ue(LOG2_MAX_FRAME_NUM - 4); // log2_max_frame_num_minus4
    w.ue(2); // pic_order_cnt_type: derived from frame_num
    w.ue(1); // max_num_ref_frames
    w.bit(false); // gaps_in_frame_num_value_allowed_flag
    w.ue(p.width_mbs - 1);
    w.ue(p.height_mbs - 1);
    w.bit(true); // frame_mbs_only_flag
    w.bit(true); // direct_8x8_inference_flag
    w.bit(false); // frame_cropping_flag
    w.bit(false); // vui_parameters_present_flag
    nal(0x67, &w.trailing())
}

/// Picture parameter set NAL unit.
pub(crate) fn pps() -> Vec<u8> {
    let mut w = MsbWriter::default();
    w.ue(0); // pic_parameter_set_id
    w.ue(0); // seq_parameter_set_id
    w.bit(false); // entropy_coding_mode_flag: CAVLC
    w.bit(false); // bottom_field_pic_order_in_frame_present_flag
    w.ue(0); // num_slice_groups_minus1
    w.ue(0); // num_ref_idx_l0_default_active_minus1
    w.ue(0); // num_ref_idx_l1_default_active_minus1
    w.bit(false); // weighted_pred_flag
    w.bits(0, 2); // weighted_bipred_idc
    w.se(0); // pic_init_qp_minus26
    w.se(0); // pic_init_qs_minus26
    w.se(0); // chroma_qp_index_offset
    w.bit(true); // deblocking_filter_control_present_flag
    w.bit(false); // constrained_intra_pred_flag
    w.bit(false); // redundant_pic_cnt_present_flag
    nal(0x68, &w.trailing())
}

/// An IDR picture in which every macroblock is I_PCM with the given Y/Cb/Cr values. `shade`
/// varies the luma per macroblock so the frame is not perfectly flat.
pub(crate) fn idr_pcm(p: &StreamParams, ycbcr: [u8; 3], shade: &[u8]) -> Vec<u8> {
    let mut w = MsbWriter::default();
    w.ue(0); // first_mb_in_slice
    w.ue(7); // slice_type: I (all slices)
    w.ue(0); // pic_parameter_set_id
    w.bits(0, LOG2_MAX_FRAME_NUM); // frame_num
    w.ue(0); // idr_pic_id
    w.bit(false); // no_output_of_prior_pics_flag
    w.bit(false); // long_term_reference_flag
    w.se(0); // slice_qp_delta
    w.ue(1); // disable_deblocking_filter_idc: off
    let total = p.width_mbs * p.height_mbs;
    for mb in 0..total {
        w.ue(25); // mb_type: I_PCM
        w.align_zero();
        let bump = shade
            .get(mb as usize % shade.len().max(1))
            .copied()
            .unwrap_or(0);
        let y = clamp_sample(ycbcr[0].saturating_add(bump % 24));
        w.bytes(&[y; 256]);
        w.bytes(&[clamp_sample(ycbcr[1]); 64]);
        w.bytes(&[clamp_sample(ycbcr[2]); 64]);
    }
    nal(0x65, &w.trailing())
}

/// A P picture where every macroblock is skipped (a copy of the previous frame).
pub(crate) fn p_skip(p: &StreamParams, frame_num: u32) -> Vec<u8> {
    let mut w = MsbWriter::default();
    w.ue(0); // first_mb_in_slice
    w.ue(5); // slice_type: P (all slices)
    w.ue(0); // pic_parameter_set_id
    w.bits(frame_num % (1 << LOG2_MAX_FRAME_NUM), LOG2_MAX_FRAME_NUM);
    w.bit(false); // num_ref_idx_active_override_flag
    w.bit(false); // ref_pic_list_modification_flag_l0
    w.bit(false); // adaptive_ref_pic_marking_mode_flag
    w.se(0); // slice_qp_delta
    w.ue(1); // disable_deblocking_filter_idc
    w.ue(p.width_mbs * p.height_mbs); // mb_skip_run covering the whole picture
    nal(0x41, &w.trailing())
}

/// Keeps PCM samples in video range and never zero.
fn clamp_sample(v: u8) -> u8 {
    v.clamp(16, 240)
}

/// Prepends the NAL header byte and inserts emulation-prevention bytes.
fn nal(header: u8, rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rbsp.len() + rbsp.len() / 64 + 1);
    out.push(header);
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

/// Converts an RGB colour to BT.601 limited-range Y/Cb/Cr.
pub(crate) fn rgb_to_ycbcr(rgb: [u8; 3]) -> [u8; 3] {
    let [r, g, b] = rgb.map(f64::from);
    let y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
    let cb = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b;
    let cr = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b;
    [y, cb, cr].map(|v| v.round().clamp(16.0, 240.0) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulation_prevention() {
        assert_eq!(
            nal(0x65, &[0, 0, 1, 0, 0, 0]),
            vec![0x65, 0, 0, 3, 1, 0, 0, 3, 0]
        );
    }
}
