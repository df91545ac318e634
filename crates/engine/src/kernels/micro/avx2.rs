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
            let (m0, m1) = masks(out.width);
            let full = out.width == NR;
            for r in 0..R {
                let p = out.c.add(r * out.ldc);
                let [mut v0, mut v1] = f[r];
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
