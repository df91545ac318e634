//! Weights packed once at load time in 32-column panels, and the AVX-512 kernel that
//! multiplies by them.
//!
//! A general GEMM library packs the right-hand matrix on every call; for an encoder
//! that matrix is always a weight, so we pack it once. With no packing left in the hot
//! path, even a short batch (tens of tokens) runs at the kernel's rate, and threads
//! share one copy of the weights instead of each packing its own.
//!
//! Layout: panel `p` holds columns `32p..32p+32` of `Wᵀ` (`k × n`), row after row:
//! `packed[p][kk][j] = W[32p + j][kk]`, zero-padded past `n`. The micro-kernel keeps a
//! 12 × 32 block of the output in 24 vector registers and streams `k` through it.

/// Panel width: two 16-float vectors.
pub const NR: usize = 32;
/// Rows per micro-kernel call: 24 accumulators + 2 weight vectors fit in 32 registers.
const MR: usize = 12;
/// Depth per pass: a 256 × 32 weight block (32 KiB) stays in L1 while rows stream by.
const KC: usize = 256;

/// Packs PyTorch's `[n, k]` weight into panels.
pub fn pack(weight: &[f32], n: usize, k: usize) -> Vec<f32> {
    assert!(weight.len() >= n * k);
    let mut out = vec![0f32; n.div_ceil(NR) * k * NR];
    // SAFETY: `weight` holds n rows of k floats, checked above.
    unsafe { pack_transposed(weight.as_ptr(), k, n, k, &mut out) };
    out
}

/// Packs `n` rows of `k` floats at stride `ld` (a `[n, k]` matrix, used as its
/// transpose) into `out`, which must hold `ceil(n/32) * k * 32` floats.
///
/// # Safety
/// `src` must be valid for `n` rows of `k` floats at stride `ld`.
pub unsafe fn pack_transposed(src: *const f32, ld: usize, n: usize, k: usize, out: &mut [f32]) {
    let panels = n.div_ceil(NR);
    assert!(out.len() >= panels * k * NR);
    for p in 0..panels {
        let width = NR.min(n - p * NR);
        let panel = &mut out[p * k * NR..(p + 1) * k * NR];
        for j in 0..width {
            let row = std::slice::from_raw_parts(src.add((p * NR + j) * ld), k);
            for (kk, v) in row.iter().enumerate() {
                panel[kk * NR + j] = *v;
            }
        }
        for j in width..NR {
            for kk in 0..k {
                panel[kk * NR + j] = 0.0;
            }
        }
    }
}

/// Packs a `[k, n]` row-major matrix at row stride `ld` (used as it is) into `out`,
/// which must hold `ceil(n/32) * k * 32` floats.
///
/// # Safety
/// `src` must be valid for `k` rows of `n` floats at stride `ld`.
pub unsafe fn pack_plain(src: *const f32, ld: usize, k: usize, n: usize, out: &mut [f32]) {
    let panels = n.div_ceil(NR);
    assert!(out.len() >= panels * k * NR);
    for p in 0..panels {
        let width = NR.min(n - p * NR);
        for kk in 0..k {
            let dst = &mut out[(p * k + kk) * NR..(p * k + kk + 1) * NR];
            let row = std::slice::from_raw_parts(src.add(kk * ld + p * NR), width);
            dst[..width].copy_from_slice(row);
            dst[width..].fill(0.0);
        }
    }
}

/// `c[rows, panel columns] (+)= a[rows] · W` for `m` rows and the panels in `panels`.
///
/// # Safety
/// The CPU must have AVX-512F. `a` must hold `m` rows of `k` floats at stride `lda`;
/// `c` must hold `m` rows at stride `ldc` covering every column of the given panels
/// (up to `n`); `packed` must come from [`pack`] with this `k` and `n`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    a: *const f32,
    lda: usize,
    m: usize,
    packed: &[f32],
    k: usize,
    n: usize,
    panels: std::ops::Range<usize>,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut k0 = 0;
    while k0 < k {
        let kc = KC.min(k - k0);
        let acc = accumulate || k0 > 0;
        for p in panels.clone() {
            let b = packed.as_ptr().add((p * k + k0) * NR);
            let width = NR.min(n - p * NR);
            let cp = c.add(p * NR);
            let mut i = 0;
            while i + MR <= m {
                micro::<MR>(
                    kc,
                    a.add(i * lda + k0),
                    lda,
                    b,
                    cp.add(i * ldc),
                    ldc,
                    width,
                    acc,
                );
                i += MR;
            }
            let (ar, cr) = (a.add(i * lda + k0), cp.add(i * ldc));
            match m - i {
                0 => {}
                1 => micro::<1>(kc, ar, lda, b, cr, ldc, width, acc),
                2 => micro::<2>(kc, ar, lda, b, cr, ldc, width, acc),
                3 => micro::<3>(kc, ar, lda, b, cr, ldc, width, acc),
                4 => micro::<4>(kc, ar, lda, b, cr, ldc, width, acc),
                5 => micro::<5>(kc, ar, lda, b, cr, ldc, width, acc),
                6 => micro::<6>(kc, ar, lda, b, cr, ldc, width, acc),
                7 => micro::<7>(kc, ar, lda, b, cr, ldc, width, acc),
                8 => micro::<8>(kc, ar, lda, b, cr, ldc, width, acc),
                9 => micro::<9>(kc, ar, lda, b, cr, ldc, width, acc),
                10 => micro::<10>(kc, ar, lda, b, cr, ldc, width, acc),
                _ => micro::<11>(kc, ar, lda, b, cr, ldc, width, acc),
            }
        }
        k0 += kc;
    }
}

/// One `R × 32` block of `c`, over `kc` steps of depth.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn micro<const R: usize>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    width: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let m0: __mmask16 = if width >= 16 {
        0xffff
    } else {
        (1u32 << width) as u16 - 1
    };
    let m1: __mmask16 = if width >= 32 {
        0xffff
    } else if width > 16 {
        (1u32 << (width - 16)) as u16 - 1
    } else {
        0
    };
    let mut lo = [_mm512_setzero_ps(); R];
    let mut hi = [_mm512_setzero_ps(); R];
    if accumulate {
        for r in 0..R {
            lo[r] = _mm512_maskz_loadu_ps(m0, c.add(r * ldc));
            hi[r] = _mm512_maskz_loadu_ps(m1, c.add(r * ldc + 16));
        }
    }
    for kk in 0..kc {
        let b0 = _mm512_loadu_ps(b.add(kk * NR));
        let b1 = _mm512_loadu_ps(b.add(kk * NR + 16));
        for r in 0..R {
            let av = _mm512_set1_ps(*a.add(r * lda + kk));
            lo[r] = _mm512_fmadd_ps(av, b0, lo[r]);
            hi[r] = _mm512_fmadd_ps(av, b1, hi[r]);
        }
    }
    for r in 0..R {
        _mm512_mask_storeu_ps(c.add(r * ldc), m0, lo[r]);
        _mm512_mask_storeu_ps(c.add(r * ldc + 16), m1, hi[r]);
    }
}
