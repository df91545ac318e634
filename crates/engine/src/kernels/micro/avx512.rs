//! AVX-512: a 12 × 32 block in 24 of the 32 zmm registers, two for the panel row and
//! one for the broadcast.

use std::arch::x86_64::*;

/// Rows per register block.
pub const MR: usize = 12;
/// Panel width: two 16-float vectors.
pub const NR: usize = 32;

/// 16 panel elements as floats.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_f32(p: *const f32) -> __m512 {
    // SAFETY: the caller points at 16 floats.
    unsafe { _mm512_loadu_ps(p) }
}

/// 16 bf16 values widened: each is the top half of its f32.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_bf16(p: *const u16) -> __m512 {
    // SAFETY: the caller points at 16 u16.
    unsafe {
        let h = _mm256_loadu_si256(p as *const __m256i);
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }
}

/// 16 IEEE halves widened (vcvtph2ps, part of AVX-512F).
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_f16(p: *const u16) -> __m512 {
    // SAFETY: the caller points at 16 u16.
    unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
}

macro_rules! kernel {
    ($name:ident, $elem:ty, $load:ident) => {
        pub mod $name {
            use super::*;

            /// One `R × 32` block of `c`, over `kc` steps of depth.
            ///
            /// # Safety
            /// As `rows`; the CPU must have AVX-512F.
            #[target_feature(enable = "avx512f")]
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
                let m0: __mmask16 = if width >= 16 {
                    0xffff
                } else {
                    ((1u32 << width) - 1) as u16
                };
                let m1: __mmask16 = if width >= 32 {
                    0xffff
                } else if width > 16 {
                    ((1u32 << (width - 16)) - 1) as u16
                } else {
                    0
                };
                let mut lo = [_mm512_setzero_ps(); R];
                let mut hi = [_mm512_setzero_ps(); R];
                if accumulate {
                    for r in 0..R {
                        // SAFETY: row r of `c` holds `width` floats; masked lanes are
                        // not read.
                        unsafe {
                            lo[r] = _mm512_maskz_loadu_ps(m0, c.add(r * ldc));
                            hi[r] = _mm512_maskz_loadu_ps(m1, c.add(r * ldc + 16));
                        }
                    }
                }
                for kk in 0..kc {
                    // SAFETY: depth step kk of the panel is 32 elements inside `b`;
                    // element (r, kk) lies inside `a`.
                    unsafe {
                        super::super::prefetch(
                            (b.add(kk * NR) as *const u8)
                                .wrapping_add(super::super::PREFETCH_BYTES),
                        );
                        let b0 = $load(b.add(kk * NR));
                        let b1 = $load(b.add(kk * NR + 16));
                        for r in 0..R {
                            let av = _mm512_set1_ps(*a.add(r * lda + kk));
                            lo[r] = _mm512_fmadd_ps(av, b0, lo[r]);
                            hi[r] = _mm512_fmadd_ps(av, b1, hi[r]);
                        }
                    }
                }
                for r in 0..R {
                    // SAFETY: row r of `c` holds `width` floats; masked lanes are not
                    // written.
                    unsafe {
                        _mm512_mask_storeu_ps(c.add(r * ldc), m0, lo[r]);
                        _mm512_mask_storeu_ps(c.add(r * ldc + 16), m1, hi[r]);
                    }
                }
            }

            super::super::rows_fn!(
                #[target_feature(enable = "avx512f")]
                12,
                [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
                $elem
            );
        }
    };
}

kernel!(float, f32, load_f32);
kernel!(bfloat, u16, load_bf16);
kernel!(half, u16, load_f16);

/// Lane masks for the first `width` floats of a 32-float panel row.
#[inline(always)]
pub(super) fn masks32(width: usize) -> (__mmask16, __mmask16) {
    let m0 = if width >= 16 {
        0xffff
    } else {
        ((1u32 << width) - 1) as u16
    };
    let m1 = if width >= 32 {
        0xffff
    } else if width > 16 {
        ((1u32 << (width - 16)) - 1) as u16
    } else {
        0
    };
    (m0, m1)
}

/// int8 on AVX-512 VNNI: `vpdpbusd` multiplies four unsigned activation bytes by four
/// signed weight bytes and adds them into an i32 lane with no intermediate
/// saturation: 64 multiply-adds per instruction instead of 16. Activations come as
/// unsigned codes (asymmetric quantization), so no offset trick is needed. A 6 × 32
/// block: 12 i32 accumulators for the current depth block, 12 f32 accumulators for
/// the sum of blocks, two panel vectors, one broadcast.
pub mod int8 {
    use super::*;
    use crate::kernels::micro::{Dequant, INT8_BLOCK};

    pub const MR: usize = 6;
    pub const NR: usize = 32;
    /// Bytes of depth per lane.
    pub const GROUP: usize = 4;

    /// # Safety
    /// As `rows`; the CPU must have AVX-512F/BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn tile<const R: usize>(
        groups: usize,
        a: *const u8,
        lda: usize,
        b: *const i8,
        out: Dequant,
    ) {
        let per_block = INT8_BLOCK / GROUP;
        let mut f0 = [_mm512_setzero_ps(); R];
        let mut f1 = [_mm512_setzero_ps(); R];
        // SAFETY: every pointer stays inside what `rows` promises: `groups` groups of
        // `a` per row and of the panel in `b`, `blocks` scales and shifts per row, a
        // panel width of column sums per block and of column scales.
        unsafe {
            for blk in 0..groups / per_block {
                let mut lo = [_mm512_setzero_si512(); R];
                let mut hi = [_mm512_setzero_si512(); R];
                for g in blk * per_block..(blk + 1) * per_block {
                    let b0 = _mm512_loadu_si512(b.add(g * GROUP * NR) as *const _);
                    let b1 = _mm512_loadu_si512(b.add(g * GROUP * NR + 64) as *const _);
                    for r in 0..R {
                        let four =
                            std::ptr::read_unaligned(a.add(r * lda + g * GROUP) as *const i32);
                        let av = _mm512_set1_epi32(four);
                        lo[r] = _mm512_dpbusd_epi32(lo[r], av, b0);
                        hi[r] = _mm512_dpbusd_epi32(hi[r], av, b1);
                    }
                }
                let c0 = _mm512_loadu_ps(out.col_sum.add(blk * NR));
                let c1 = _mm512_loadu_ps(out.col_sum.add(blk * NR + 16));
                let w0 = _mm512_loadu_ps(out.col_scale.add(blk * NR));
                let w1 = _mm512_loadu_ps(out.col_scale.add(blk * NR + 16));
                for r in 0..R {
                    let s = _mm512_set1_ps(*out.row_scale.add(r * out.blocks + blk));
                    let m = _mm512_set1_ps(*out.row_shift.add(r * out.blocks + blk));
                    let d0 = _mm512_mul_ps(_mm512_cvtepi32_ps(lo[r]), w0);
                    let d1 = _mm512_mul_ps(_mm512_cvtepi32_ps(hi[r]), w1);
                    f0[r] = _mm512_fnmadd_ps(m, c0, _mm512_fmadd_ps(s, d0, f0[r]));
                    f1[r] = _mm512_fnmadd_ps(m, c1, _mm512_fmadd_ps(s, d1, f1[r]));
                }
            }
            let (m0, m1) = masks32(out.width);
            for r in 0..R {
                let p = out.c.add(r * out.ldc);
                let mut v0 = f0[r];
                let mut v1 = f1[r];
                if out.accumulate {
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, p));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, p.add(16)));
                }
                _mm512_mask_storeu_ps(p, m0, v0);
                _mm512_mask_storeu_ps(p.add(16), m1, v1);
            }
        }
    }

    crate::kernels::micro::quant_rows_fn!(
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        6,
        [1, 2, 3, 4, 5],
        u8,
        i8
    );
}

/// bf16 products on AVX-512 BF16: `vdpbf16ps` multiplies pairs of bf16 values and
/// adds both products into an f32 lane, 32 multiply-adds per instruction instead of
/// 16. Weights are packed as bf16 pairs along the depth; activations are rounded to
/// bf16 (nearest even) as they enter each layer. A 12 × 32 block.
pub mod dot_bf16 {
    use super::*;
    use crate::kernels::micro::Dequant;

    pub const MR: usize = 12;
    pub const NR: usize = 32;
    /// Values of depth per lane.
    pub const GROUP: usize = 2;

    /// # Safety
    /// As `rows`; the CPU must have AVX-512F/BW and AVX-512 BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    #[inline]
    unsafe fn tile<const R: usize>(
        groups: usize,
        a: *const u16,
        lda: usize,
        b: *const u16,
        out: Dequant,
    ) {
        let (m0, m1) = masks32(out.width);
        // SAFETY: every pointer stays inside what `rows` promises: `groups` pairs of
        // `a` per row and of the panel in `b`; row r of `c` holds `width` floats and
        // masked lanes are neither read nor written.
        unsafe {
            let mut lo = [_mm512_setzero_ps(); R];
            let mut hi = [_mm512_setzero_ps(); R];
            if out.accumulate {
                for r in 0..R {
                    lo[r] = _mm512_maskz_loadu_ps(m0, out.c.add(r * out.ldc));
                    hi[r] = _mm512_maskz_loadu_ps(m1, out.c.add(r * out.ldc + 16));
                }
            }
            for g in 0..groups {
                let b0: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(b.add(g * GROUP * NR) as *const _));
                let b1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(b.add(g * GROUP * NR + 32) as *const _));
                for r in 0..R {
                    let pair = std::ptr::read_unaligned(a.add(r * lda + g * GROUP) as *const i32);
                    let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                    lo[r] = _mm512_dpbf16_ps(lo[r], av, b0);
                    hi[r] = _mm512_dpbf16_ps(hi[r], av, b1);
                }
            }
            for r in 0..R {
                let p = out.c.add(r * out.ldc);
                _mm512_mask_storeu_ps(p, m0, lo[r]);
                _mm512_mask_storeu_ps(p.add(16), m1, hi[r]);
            }
        }
    }

    crate::kernels::micro::quant_rows_fn!(
        #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
        12,
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        u16,
        u16
    );
}
