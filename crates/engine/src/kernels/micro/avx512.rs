//! AVX-512: a 12 × 32 block in 24 of the 32 zmm registers, two for the panel row and
//! one for the broadcast.

use std::arch::asm;
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
        // `a` per row and of the panel in `b` (so `block6` gets its 6 rows of 64 bytes
        // and 2 KiB of panel per block), `blocks` scales and shifts per row, a panel
        // width of column sums per block and of column scales; the CPU has VNNI.
        unsafe {
            for blk in 0..groups / per_block {
                let mut lo = [_mm512_setzero_si512(); R];
                let mut hi = [_mm512_setzero_si512(); R];
                if R == MR {
                    // Whole 6-row blocks: the written-out loop (R == MR, so the
                    // lengths match).
                    let (l, h) = block6(a.add(blk * INT8_BLOCK), lda, b.add(blk * INT8_BLOCK * NR));
                    lo.copy_from_slice(&l);
                    hi.copy_from_slice(&h);
                } else {
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

    /// One group of depth (four bytes per row) of the 6 × 32 block: panel row at
    /// byte `$b` from the panel pointer, activations at byte `$a` from each row.
    macro_rules! group {
        ($a:literal, $b:literal) => {
            concat!(
                "vmovdqu64 zmm12, [{b} + ",
                $b,
                "]\n",
                "vmovdqu64 zmm13, [{b} + ",
                $b,
                " + 64]\n",
                row!("{a0}", $a, 0, 6),
                row!("{a0} + {l}", $a, 1, 7),
                row!("{a0} + {l}*2", $a, 2, 8),
                row!("{a3}", $a, 3, 9),
                row!("{a3} + {l}", $a, 4, 10),
                row!("{a3} + {l}*2", $a, 5, 11),
            )
        };
    }

    /// One row of a group: broadcast its four activation bytes, two `vpdpbusd`.
    macro_rules! row {
        ($addr:literal, $a:literal, $lo:literal, $hi:literal) => {
            concat!(
                "vpbroadcastd zmm14, dword ptr [",
                $addr,
                " + ",
                $a,
                "]\n",
                "vpdpbusd zmm",
                $lo,
                ", zmm14, zmm12\n",
                "vpdpbusd zmm",
                $hi,
                ", zmm14, zmm13\n",
            )
        };
    }

    /// The exact i32 sums of one depth block ([`INT8_BLOCK`] bytes) of the 6 × 32
    /// block, written out: compiled from intrinsics, each group recomputed the six
    /// rows' addresses (a chain of adds beside every broadcast), integer work that on
    /// Intel cores shares ports 0 and 5 with `vpdpbusd`. Two row pointers and one
    /// stride address all six rows (`base + stride · {1, 2}`) and every offset is a
    /// constant. Measured on an Intel Xeon (AMX machine): MiniLM's four layers, 2,400
    /// rows, 2 threads, 324-334 -> 344-347 G multiply-adds/s. A stand-alone loop of
    /// this shape with the fold, operands in L1, ran ~260 per core there: the rest of
    /// the gap to it is the fold's loads, the tile's stores and quantizing.
    ///
    /// # Safety
    /// `a` holds 6 rows of [`INT8_BLOCK`] bytes at stride `lda`, `b` the block's 16
    /// panel groups (2 KiB); the CPU has AVX-512F/BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn block6(a: *const u8, lda: usize, b: *const i8) -> ([__m512i; MR], [__m512i; MR]) {
        const _: () = assert!(MR == 6 && NR == 32 && INT8_BLOCK == 64);
        let (l0, l1, l2, l3, l4, l5): (__m512i, __m512i, __m512i, __m512i, __m512i, __m512i);
        let (h0, h1, h2, h3, h4, h5): (__m512i, __m512i, __m512i, __m512i, __m512i, __m512i);
        // SAFETY: the loads read rows 0..6 of `a` at bytes 0..64 and the panel's
        // 2 KiB at `b` (the caller's promise); zmm12-14 are declared clobbered.
        unsafe {
            asm!(
                "vpxord zmm0, zmm0, zmm0",
                "vpxord zmm1, zmm1, zmm1",
                "vpxord zmm2, zmm2, zmm2",
                "vpxord zmm3, zmm3, zmm3",
                "vpxord zmm4, zmm4, zmm4",
                "vpxord zmm5, zmm5, zmm5",
                "vpxord zmm6, zmm6, zmm6",
                "vpxord zmm7, zmm7, zmm7",
                "vpxord zmm8, zmm8, zmm8",
                "vpxord zmm9, zmm9, zmm9",
                "vpxord zmm10, zmm10, zmm10",
                "vpxord zmm11, zmm11, zmm11",
                group!("0", "0"),
                group!("4", "128"),
                group!("8", "256"),
                group!("12", "384"),
                group!("16", "512"),
                group!("20", "640"),
                group!("24", "768"),
                group!("28", "896"),
                group!("32", "1024"),
                group!("36", "1152"),
                group!("40", "1280"),
                group!("44", "1408"),
                group!("48", "1536"),
                group!("52", "1664"),
                group!("56", "1792"),
                group!("60", "1920"),
                a0 = in(reg) a,
                a3 = in(reg) a.add(3 * lda),
                l = in(reg) lda,
                b = in(reg) b,
                out("zmm0") l0, out("zmm1") l1, out("zmm2") l2,
                out("zmm3") l3, out("zmm4") l4, out("zmm5") l5,
                out("zmm6") h0, out("zmm7") h1, out("zmm8") h2,
                out("zmm9") h3, out("zmm10") h4, out("zmm11") h5,
                out("zmm12") _, out("zmm13") _, out("zmm14") _,
                options(nostack, readonly, preserves_flags),
            );
        }
        ([l0, l1, l2, l3, l4, l5], [h0, h1, h2, h3, h4, h5])
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
