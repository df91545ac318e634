//! AVX2 + FMA: a 6 × 16 block in 12 of the 16 ymm registers, two for the panel row
//! and one for the broadcast (the classic Haswell shape).

use std::arch::x86_64::*;

/// Rows per register block.
pub const MR: usize = 6;
/// Panel width: two 8-float vectors.
pub const NR: usize = 16;

/// Lane masks for the first `width` floats of a 16-float row, as maskload wants them.
#[target_feature(enable = "avx2")]
#[inline]
fn masks(width: usize) -> (__m256i, __m256i) {
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let w = width as i32;
    (
        _mm256_cmpgt_epi32(_mm256_set1_epi32(w), lane),
        _mm256_cmpgt_epi32(_mm256_set1_epi32(w - 8), lane),
    )
}

/// 8 panel elements as floats.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn load_f32(p: *const f32) -> __m256 {
    // SAFETY: the caller points at 8 floats.
    unsafe { _mm256_loadu_ps(p) }
}

/// 8 bf16 values widened: each is the top half of its f32.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn load_bf16(p: *const u16) -> __m256 {
    // SAFETY: the caller points at 8 u16.
    unsafe {
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }
}

/// 8 IEEE halves widened (F16C).
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn load_f16(p: *const u16) -> __m256 {
    // SAFETY: the caller points at 8 u16.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
}

macro_rules! kernel {
    ($name:ident, $elem:ty, $load:ident, $features:literal) => {
        pub mod $name {
            use super::*;

            /// One `R × 16` block of `c`, over `kc` steps of depth.
            ///
            /// # Safety
            /// As `rows`; the CPU must have the kernel's features.
            #[target_feature(enable = $features)]
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
                let (m0, m1) = masks(width);
                let full = width == NR;
                let mut lo = [_mm256_setzero_ps(); R];
                let mut hi = [_mm256_setzero_ps(); R];
                if accumulate {
                    for r in 0..R {
                        // SAFETY: row r of `c` holds `width` floats; masked lanes are
                        // not read.
                        unsafe {
                            let p = c.add(r * ldc);
                            if full {
                                lo[r] = _mm256_loadu_ps(p);
                                hi[r] = _mm256_loadu_ps(p.add(8));
                            } else {
                                lo[r] = _mm256_maskload_ps(p, m0);
                                hi[r] = _mm256_maskload_ps(p.add(8), m1);
                            }
                        }
                    }
                }
                for kk in 0..kc {
                    // SAFETY: depth step kk of the panel is 16 elements inside `b`;
                    // element (r, kk) lies inside `a`.
                    unsafe {
                        super::super::prefetch(
                            (b.add(kk * NR) as *const u8)
                                .wrapping_add(super::super::PREFETCH_BYTES),
                        );
                        let b0 = $load(b.add(kk * NR));
                        let b1 = $load(b.add(kk * NR + 8));
                        for r in 0..R {
                            let av = _mm256_broadcast_ss(&*a.add(r * lda + kk));
                            lo[r] = _mm256_fmadd_ps(av, b0, lo[r]);
                            hi[r] = _mm256_fmadd_ps(av, b1, hi[r]);
                        }
                    }
                }
                for r in 0..R {
                    // SAFETY: row r of `c` holds `width` floats; masked lanes are not
                    // written.
                    unsafe {
                        let p = c.add(r * ldc);
                        if full {
                            _mm256_storeu_ps(p, lo[r]);
                            _mm256_storeu_ps(p.add(8), hi[r]);
                        } else {
                            _mm256_maskstore_ps(p, m0, lo[r]);
                            _mm256_maskstore_ps(p.add(8), m1, hi[r]);
                        }
                    }
                }
            }

            super::super::rows_fn!(
                #[target_feature(enable = $features)]
                6,
                [1, 2, 3, 4, 5],
                $elem
            );
        }
    };
}

kernel!(float, f32, load_f32, "avx2,fma");
kernel!(bfloat, u16, load_bf16, "avx2,fma");
kernel!(half, u16, load_f16, "avx2,fma,f16c");

/// Folds one depth block's exact i32 sums of a quantized 6 × 16 block (`lo`: columns
/// 0..8, `hi`: 8..16) into its f32 sums `f`, as [`Dequant`] describes.
///
/// # Safety
/// `out` must hold block `blk`'s scales and shifts for `R` rows and its column
/// scales and sums (a panel width each); the CPU must have AVX2 and FMA.
///
/// [`Dequant`]: crate::kernels::micro::Dequant
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::needless_range_loop)] // rows index three arrays alike
unsafe fn fold<const R: usize>(
    lo: &[__m256i; R],
    hi: &[__m256i; R],
    blk: usize,
    out: crate::kernels::micro::Dequant,
    f: &mut [[__m256; 2]; R],
) {
    // SAFETY: the reads stay inside block `blk`'s scales and sums (the caller's
    // promise).
    unsafe {
        let c0 = _mm256_loadu_ps(out.col_sum.add(blk * NR));
        let c1 = _mm256_loadu_ps(out.col_sum.add(blk * NR + 8));
        let w0 = _mm256_loadu_ps(out.col_scale.add(blk * NR));
        let w1 = _mm256_loadu_ps(out.col_scale.add(blk * NR + 8));
        for r in 0..R {
            let s = _mm256_set1_ps(*out.row_scale.add(r * out.blocks + blk));
            let m = _mm256_set1_ps(*out.row_shift.add(r * out.blocks + blk));
            let d0 = _mm256_mul_ps(_mm256_cvtepi32_ps(lo[r]), w0);
            let d1 = _mm256_mul_ps(_mm256_cvtepi32_ps(hi[r]), w1);
            f[r][0] = _mm256_fnmadd_ps(m, c0, _mm256_fmadd_ps(s, d0, f[r][0]));
            f[r][1] = _mm256_fnmadd_ps(m, c1, _mm256_fmadd_ps(s, d1, f[r][1]));
        }
    }
}

/// Stores a quantized kernel's 6 × 16 (or fewer rows) block of f32 sums: `c (+)= f`
/// for the first `out.width` columns.
///
/// # Safety
/// `out.c` must be valid for `R` rows of `out.width` floats at stride `out.ldc`; the
/// CPU must have AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store<const R: usize>(f: &[[__m256; 2]; R], out: crate::kernels::micro::Dequant) {
    let (m0, m1) = masks(out.width);
    let full = out.width == NR;
    // SAFETY: row r of `c` holds `width` floats (the caller's promise); masked lanes
    // are neither read nor written.
    unsafe {
        for (r, &[mut v0, mut v1]) in f.iter().enumerate() {
            let p = out.c.add(r * out.ldc);
            if full {
                if out.accumulate {
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(p));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(p.add(8)));
                }
                _mm256_storeu_ps(p, v0);
                _mm256_storeu_ps(p.add(8), v1);
            } else {
                if out.accumulate {
                    v0 = _mm256_add_ps(v0, _mm256_maskload_ps(p, m0));
                    v1 = _mm256_add_ps(v1, _mm256_maskload_ps(p.add(8), m1));
                }
                _mm256_maskstore_ps(p, m0, v0);
                _mm256_maskstore_ps(p.add(8), m1, v1);
            }
        }
    }
}

/// int8 on AVX2: weights are widened to i16 as each panel row is loaded
/// (`vpmovsxbw`) and multiplied with i16 activation pairs by `vpmaddwd`, which adds
/// each pair of products into an i32 lane exactly.
///
/// Why not `vpmaddubsw` (u8 × i8 pairs into i16): its pair sums saturate
/// (255 · 127 · 2 > 32767), so it is exact only with 7-bit activations or weights.
/// Measured on Zen 3: it would run the kernel ~35% faster, but either 7-bit side
/// takes all-MiniLM-L6-v2's minimum cosine to f32 from 0.9986 to 0.9968 and its
/// top-10 agreement from 0.981 to 0.972 (README, "Quantization"), so int8 stays
/// 8-bit and exact here.
///
/// What limits this kernel is instructions, not multiplies: Zen 3 issues two
/// `vpmaddwd` per cycle but dispatches six instructions, and each product needs a
/// broadcast, a multiply and an add. So the activations come interleaved by tile
/// (`Quantized::at`: a row's pair, then the next row's, for the tile's rows): one
/// pointer walks them all with immediate offsets, and each broadcast feeds two
/// multiplies. A 6 × 16 block: 12 i32 accumulators for the depth block, two widened
/// panel rows and one broadcast fill the 16 registers, so the f32 sum of blocks is
/// kept in memory and touched once per block.
pub mod int8 {
    use super::*;
    use crate::kernels::micro::{Dequant, INT8_BLOCK};

    pub const MR: usize = 6;
    pub const NR: usize = 16;
    /// Values of depth per lane.
    pub const GROUP: usize = 2;

    /// # Safety
    /// As `rows`: `a` points at this tile's activations for the first group, in the
    /// interleaved layout for `R` rows; the CPU must have AVX2.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::needless_range_loop)] // rows index registers and pointers alike
    unsafe fn tile<const R: usize>(groups: usize, a: *const i16, b: *const i8, out: Dequant) {
        let per_block = INT8_BLOCK / GROUP;
        // The sum of blocks: 2R more registers than the 16 there are, so it lives in
        // memory and is touched once per block.
        let mut f = [[_mm256_setzero_ps(); 2]; R];
        // SAFETY: every pointer stays inside what `rows` promises (see avx512::int8):
        // `groups` groups of R interleaved rows in `a`, of the panel in `b`.
        unsafe {
            let (mut ap, mut bp) = (a, b);
            for blk in 0..groups / per_block {
                let mut lo = [_mm256_setzero_si256(); R];
                let mut hi = [_mm256_setzero_si256(); R];
                for _ in 0..per_block {
                    let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bp as *const __m128i));
                    let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bp.add(16) as *const __m128i));
                    for r in 0..R {
                        let pair = std::ptr::read_unaligned(ap.add(r * GROUP) as *const i32);
                        let av = _mm256_set1_epi32(pair);
                        lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(av, w0));
                        hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(av, w1));
                    }
                    ap = ap.add(R * GROUP);
                    bp = bp.add(GROUP * NR);
                }
                fold(&lo, &hi, blk, out, &mut f);
            }
            store(&f, out);
        }
    }

    /// `out[0..m, 0..width] (+)= dequantize(a[0..m] · b)` for one panel, over the
    /// `groups` depth groups from group `g0`.
    ///
    /// # Safety
    /// `a` must hold `m` rows of `stride` codes interleaved in tiles of [`MR`] rows
    /// (`Quantized::at`), with `g0 + groups` groups per row; `b` `groups` groups of
    /// one panel; `out` as [`Dequant`] describes, for `m` rows. `groups` must be a
    /// whole number of [`INT8_BLOCK`]s. The CPU must have AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn rows(
        groups: usize,
        a: *const i16,
        stride: usize,
        g0: usize,
        m: usize,
        b: *const i8,
        out: Dequant,
    ) {
        let mut i = 0;
        // SAFETY: tile i's codes start at row i's first code, and group g0 of a tile
        // of t rows g0 · t pairs further (the caller's promise covers them).
        unsafe {
            while i + MR <= m {
                tile::<MR>(groups, a.add(i * stride + g0 * MR * GROUP), b, out.down(i));
                i += MR;
            }
            let t = m - i;
            let (a, out) = (a.add(i * stride + g0 * t * GROUP), out.down(i));
            match t {
                0 => {}
                1 => tile::<1>(groups, a, b, out),
                2 => tile::<2>(groups, a, b, out),
                3 => tile::<3>(groups, a, b, out),
                4 => tile::<4>(groups, a, b, out),
                5 => tile::<5>(groups, a, b, out),
                _ => unreachable!("remainder below MR"),
            }
        }
    }
}

/// int8 on AVX-VNNI (the VEX-encoded `vpdpbusd` on ymm registers of Intel Alder
/// Lake and later clients, Sierra Forest and Arrow Lake, and of Sapphire Rapids
/// beside its AVX-512 one): u8 activations times i8 weights, four products per i32
/// lane, added exactly (the u8 × i8 products are widened before they are summed, so
/// nothing saturates, unlike `vpmaddubsw`). One instruction does what the exact
/// AVX2 kernel does with a widening load and `vpmaddwd` on half the depth, and the
/// activations take one byte per value instead of two.
///
/// The block is the AVX2 kernel's 6 × 16 (12 i32 accumulators, two panel rows, one
/// broadcast), over groups of four depth bytes, packed as the AVX-512 VNNI kernel
/// packs them at half its width. Activations are plain rows of u8 codes, as the
/// AVX-512 kernel reads them.
pub mod vnni {
    use super::*;
    use crate::kernels::micro::{Dequant, INT8_BLOCK};

    pub const MR: usize = 6;
    pub const NR: usize = 16;
    /// Bytes of depth per lane.
    pub const GROUP: usize = 4;

    /// # Safety
    /// As `rows`; the CPU must have AVX2 and AVX-VNNI.
    #[target_feature(enable = "avx2,fma,avxvnni")]
    #[inline]
    #[allow(clippy::needless_range_loop)] // rows index registers and pointers alike
    unsafe fn tile<const R: usize>(
        groups: usize,
        a: *const u8,
        lda: usize,
        b: *const i8,
        out: Dequant,
    ) {
        let per_block = INT8_BLOCK / GROUP;
        // The sum of blocks: 2R more registers than there are, so it lives in memory
        // and is touched once per block, as in the exact AVX2 kernel.
        let mut f = [[_mm256_setzero_ps(); 2]; R];
        // SAFETY: every pointer stays inside what `rows` promises: `groups` groups of
        // `a` per row and of the panel in `b`, `blocks` scales and shifts per row, a
        // panel width of column scales and sums per block; the CPU has AVX-VNNI.
        unsafe {
            for blk in 0..groups / per_block {
                let mut lo = [_mm256_setzero_si256(); R];
                let mut hi = [_mm256_setzero_si256(); R];
                if R == MR {
                    // Whole 6-row blocks: the written-out loop (R == MR, so the
                    // lengths match).
                    let (l, h) = block6(a.add(blk * INT8_BLOCK), lda, b.add(blk * INT8_BLOCK * NR));
                    lo.copy_from_slice(&l);
                    hi.copy_from_slice(&h);
                } else {
                    for g in blk * per_block..(blk + 1) * per_block {
                        let b0 = _mm256_loadu_si256(b.add(g * GROUP * NR) as *const __m256i);
                        let b1 = _mm256_loadu_si256(b.add(g * GROUP * NR + 32) as *const __m256i);
                        for r in 0..R {
                            let at = a.add(r * lda + g * GROUP) as *const i32;
                            let av = _mm256_set1_epi32(std::ptr::read_unaligned(at));
                            lo[r] = _mm256_dpbusd_avx_epi32(lo[r], av, b0);
                            hi[r] = _mm256_dpbusd_avx_epi32(hi[r], av, b1);
                        }
                    }
                }
                fold(&lo, &hi, blk, out, &mut f);
            }
            store(&f, out);
        }
    }
    /// One group of depth (four bytes per row) of the 6 × 16 block: panel row at
    /// byte `$b` from the panel pointer, activations at byte `$a` from each row.
    macro_rules! group {
        ($a:literal, $b:literal) => {
            concat!(
                "vmovdqu ymm12, [{b} + ",
                $b,
                "]\n",
                "vmovdqu ymm13, [{b} + ",
                $b,
                " + 32]\n",
                row!("{a0}", $a, 0, 6),
                row!("{a0} + {l}", $a, 1, 7),
                row!("{a0} + {l}*2", $a, 2, 8),
                row!("{a3}", $a, 3, 9),
                row!("{a3} + {l}", $a, 4, 10),
                row!("{a3} + {l}*2", $a, 5, 11),
            )
        };
    }

    /// One row of a group: broadcast its four activation bytes, two `vpdpbusd`
    /// (`{vex}`: the AVX-VNNI encoding, which needs no AVX-512).
    macro_rules! row {
        ($addr:literal, $a:literal, $lo:literal, $hi:literal) => {
            concat!(
                "vpbroadcastd ymm14, dword ptr [",
                $addr,
                " + ",
                $a,
                "]\n",
                "{{vex}} vpdpbusd ymm",
                $lo,
                ", ymm14, ymm12\n",
                "{{vex}} vpdpbusd ymm",
                $hi,
                ", ymm14, ymm13\n",
            )
        };
    }

    /// The exact i32 sums of one depth block ([`INT8_BLOCK`] bytes) of the 6 × 16
    /// block, written out as the AVX-512 VNNI kernel's `block6` is, for the same
    /// reason: compiled from intrinsics, each group walked the six rows' addresses as
    /// a chain of adds beside the broadcasts. Two row pointers and one stride address
    /// all six rows and every offset is a constant. Measured on an Intel Xeon (AMX
    /// machine, `examples/layer_speed`, MiniLM's layers, 2,400 rows, 4 alternating
    /// runs): 293-300 -> 307-314 G multiply-adds/s.
    ///
    /// # Safety
    /// `a` holds 6 rows of [`INT8_BLOCK`] bytes at stride `lda`, `b` the block's 16
    /// panel groups (1 KiB); the CPU has AVX2 and AVX-VNNI.
    #[target_feature(enable = "avx2,avxvnni")]
    #[inline]
    unsafe fn block6(a: *const u8, lda: usize, b: *const i8) -> ([__m256i; MR], [__m256i; MR]) {
        const _: () = assert!(MR == 6 && NR == 16 && GROUP == 4 && INT8_BLOCK == 64);
        let (l0, l1, l2, l3, l4, l5): (__m256i, __m256i, __m256i, __m256i, __m256i, __m256i);
        let (h0, h1, h2, h3, h4, h5): (__m256i, __m256i, __m256i, __m256i, __m256i, __m256i);
        // SAFETY: the loads read rows 0..6 of `a` at bytes 0..64 and the panel's
        // 1 KiB at `b` (the caller's promise); ymm12-14 are declared clobbered.
        unsafe {
            std::arch::asm!(
                "vpxor ymm0, ymm0, ymm0",
                "vpxor ymm1, ymm1, ymm1",
                "vpxor ymm2, ymm2, ymm2",
                "vpxor ymm3, ymm3, ymm3",
                "vpxor ymm4, ymm4, ymm4",
                "vpxor ymm5, ymm5, ymm5",
                "vpxor ymm6, ymm6, ymm6",
                "vpxor ymm7, ymm7, ymm7",
                "vpxor ymm8, ymm8, ymm8",
                "vpxor ymm9, ymm9, ymm9",
                "vpxor ymm10, ymm10, ymm10",
                "vpxor ymm11, ymm11, ymm11",
                group!("0", "0"),
                group!("4", "64"),
                group!("8", "128"),
                group!("12", "192"),
                group!("16", "256"),
                group!("20", "320"),
                group!("24", "384"),
                group!("28", "448"),
                group!("32", "512"),
                group!("36", "576"),
                group!("40", "640"),
                group!("44", "704"),
                group!("48", "768"),
                group!("52", "832"),
                group!("56", "896"),
                group!("60", "960"),
                a0 = in(reg) a,
                a3 = in(reg) a.add(3 * lda),
                l = in(reg) lda,
                b = in(reg) b,
                out("ymm0") l0, out("ymm1") l1, out("ymm2") l2,
                out("ymm3") l3, out("ymm4") l4, out("ymm5") l5,
                out("ymm6") h0, out("ymm7") h1, out("ymm8") h2,
                out("ymm9") h3, out("ymm10") h4, out("ymm11") h5,
                out("ymm12") _, out("ymm13") _, out("ymm14") _,
                options(nostack, readonly, preserves_flags),
            );
        }
        ([l0, l1, l2, l3, l4, l5], [h0, h1, h2, h3, h4, h5])
    }

    crate::kernels::micro::quant_rows_fn!(
        #[target_feature(enable = "avx2,fma,avxvnni")]
        6,
        [1, 2, 3, 4, 5],
        u8,
        i8
    );
}
