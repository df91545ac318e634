//! aarch64 NEON: a 6 × 16 block in 24 of the 32 q registers, four for the panel row
//! and one for the broadcast (loaded straight from `A` with ld1r, so `A` needs no
//! packing).

use std::arch::aarch64::*;

/// Rows per register block.
pub const MR: usize = 6;
/// Panel width: four 4-float vectors.
pub const NR: usize = 16;

/// 4 panel elements as floats.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn load_f32(p: *const f32) -> float32x4_t {
    // SAFETY: the caller points at 4 floats.
    unsafe { vld1q_f32(p) }
}

/// 4 bf16 values widened: each is the top half of its f32.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn load_bf16(p: *const u16) -> float32x4_t {
    // SAFETY: the caller points at 4 u16.
    unsafe { vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p))) }
}

macro_rules! kernel {
    ($name:ident, $elem:ty, $load:ident) => {
        pub mod $name {
            use super::*;

            /// One `R × 16` block of `c`, over `kc` steps of depth.
            ///
            /// # Safety
            /// As `rows`.
            #[target_feature(enable = "neon")]
            #[inline]
            #[allow(clippy::too_many_arguments)]
            unsafe fn tile<const R: usize>(
                kc: usize,
                a: *const f32,
                lda: usize,
                b: *const $elem,
                c: *mut f32,
                ldc: usize,
                width: usize,
                accumulate: bool,
            ) {
                let full = width == NR;
                let mut acc = [[vdupq_n_f32(0.0); 4]; R];
                if accumulate {
                    for (r, row) in acc.iter_mut().enumerate() {
                        let mut buf = [0f32; NR];
                        // SAFETY: row r of `c` holds `width` floats.
                        let src = unsafe { std::slice::from_raw_parts(c.add(r * ldc), width) };
                        buf[..width].copy_from_slice(src);
                        for (j, v) in row.iter_mut().enumerate() {
                            // SAFETY: buf holds 16 floats.
                            *v = unsafe { vld1q_f32(buf.as_ptr().add(4 * j)) };
                        }
                    }
                }
                for kk in 0..kc {
                    // SAFETY: depth step kk of the panel is 16 elements inside `b`;
                    // element (r, kk) lies inside `a`.
                    unsafe {
                        let bp = b.add(kk * NR);
                        let bv = [
                            $load(bp),
                            $load(bp.add(4)),
                            $load(bp.add(8)),
                            $load(bp.add(12)),
                        ];
                        for (r, row) in acc.iter_mut().enumerate() {
                            let av = vld1q_dup_f32(a.add(r * lda + kk));
                            for j in 0..4 {
                                row[j] = vfmaq_f32(row[j], bv[j], av);
                            }
                        }
                    }
                }
                for (r, row) in acc.iter().enumerate() {
                    // SAFETY: row r of `c` holds `width` floats; a partial row goes
                    // through a buffer.
                    unsafe {
                        let p = c.add(r * ldc);
                        if full {
                            for (j, v) in row.iter().enumerate() {
                                vst1q_f32(p.add(4 * j), *v);
                            }
                        } else {
                            let mut buf = [0f32; NR];
                            for (j, v) in row.iter().enumerate() {
                                vst1q_f32(buf.as_mut_ptr().add(4 * j), *v);
                            }
                            std::ptr::copy_nonoverlapping(buf.as_ptr(), p, width);
                        }
                    }
                }
            }

            super::super::rows_fn!(
                #[target_feature(enable = "neon")]
                6,
                [1, 2, 3, 4, 5],
                $elem
            );
        }
    };
}

kernel!(float, f32, load_f32);
kernel!(bfloat, u16, load_bf16);

/// int8 with `sdot` (Armv8.2 dot product: four i8 products added into an i32 lane),
/// 16 multiply-adds per instruction. Activation codes are the unsigned code − 128
/// (sdot is signed × signed). A 4 × 16 block: 16 i32 accumulators for the depth
/// block, 16 f32 for the sum of blocks, four panel vectors, one broadcast. CPUs
/// without `sdot` use the portable kernel, which shares this packing.
pub mod int8 {
    use super::*;
    use crate::kernels::micro::{Dequant, INT8_BLOCK};

    pub const MR: usize = 4;
    pub const NR: usize = 16;
    /// Bytes of depth per lane.
    pub const GROUP: usize = 4;

    /// `acc + Σ` of four-byte products per lane. Inline assembly: the intrinsic is
    /// not stable in the Rust this project builds with.
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    fn sdot(mut acc: int32x4_t, b: int8x16_t, a: int8x16_t) -> int32x4_t {
        // SAFETY: a register-only instruction of the dotprod extension, which this
        // function's target features require of the CPU.
        unsafe {
            std::arch::asm!(
                "sdot {acc:v}.4s, {b:v}.16b, {a:v}.16b",
                acc = inout(vreg) acc,
                b = in(vreg) b,
                a = in(vreg) a,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        acc
    }

    /// # Safety
    /// As `rows`; the CPU must have the dot-product extension.
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    unsafe fn tile<const R: usize>(
        groups: usize,
        a: *const i8,
        lda: usize,
        b: *const i8,
        out: Dequant,
    ) {
        let per_block = INT8_BLOCK / GROUP;
        let mut acc = [[vdupq_n_f32(0.0); 4]; R];
        // SAFETY: as the portable kernel's: everything lies inside what `rows`
        // promises.
        unsafe {
            for blk in 0..groups / per_block {
                let mut dots = [[vdupq_n_s32(0); 4]; R];
                for g in blk * per_block..(blk + 1) * per_block {
                    let p = b.add(g * GROUP * NR);
                    let bv = [
                        vld1q_s8(p),
                        vld1q_s8(p.add(16)),
                        vld1q_s8(p.add(32)),
                        vld1q_s8(p.add(48)),
                    ];
                    for (r, row) in dots.iter_mut().enumerate() {
                        let four =
                            std::ptr::read_unaligned(a.add(r * lda + g * GROUP) as *const i32);
                        let av = vreinterpretq_s8_s32(vdupq_n_s32(four));
                        for (v, bq) in row.iter_mut().zip(bv) {
                            *v = sdot(*v, bq, av);
                        }
                    }
                }
                for r in 0..R {
                    let s = vdupq_n_f32(*out.row_scale.add(r * out.blocks + blk));
                    let m = vdupq_n_f32(*out.row_shift.add(r * out.blocks + blk));
                    for v in 0..4 {
                        let sums = vld1q_f32(out.col_sum.add(blk * NR + 4 * v));
                        let scale = vld1q_f32(out.col_scale.add(blk * NR + 4 * v));
                        let d = vmulq_f32(vcvtq_f32_s32(dots[r][v]), scale);
                        let f = vfmaq_f32(acc[r][v], s, d);
                        acc[r][v] = vfmsq_f32(f, m, sums);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                let mut buf = [0f32; NR];
                for (j, v) in row.iter().enumerate() {
                    vst1q_f32(buf.as_mut_ptr().add(4 * j), *v);
                }
                let c = std::slice::from_raw_parts_mut(out.c.add(r * out.ldc), out.width);
                if out.accumulate {
                    c.iter_mut().zip(&buf).for_each(|(o, v)| *o += v);
                } else {
                    c.copy_from_slice(&buf[..out.width]);
                }
            }
        }
    }

    crate::kernels::micro::quant_rows_fn!(
        #[target_feature(enable = "neon,dotprod")]
        4,
        [1, 2, 3],
        i8,
        i8
    );
}
