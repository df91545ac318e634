//! Micro-kernels: one register block of `C += A · B` per call, one file per
//! instruction set, all reading `B` in the panel layout of [`super::pack`].
//!
//! Each kernel keeps an `MR × NR` block of `C` in registers and streams the depth
//! through it: per step one row of the packed panel (`NR` elements, reused by every
//! row) and one broadcast float of `A` per row. `rows` runs a whole column panel for
//! `m` rows, in blocks of `MR` and one remainder block, so callers never see `MR`.
//! Every instruction set has a kernel per panel storage (f32, and bf16/f16 widened
//! to f32 in registers as each panel row is loaded).

#[cfg(target_arch = "x86_64")]
pub mod amx;
#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod portable;

/// How far ahead of the panel row in use the kernels ask for weights. A short
/// batch (a 16-token query) reads each weight from memory once and uses it for
/// few rows, and a panel crosses a 4 KiB page every 32 (AVX-512) or 64 (AVX2)
/// depth steps, where the hardware prefetchers stop: measured on Zen 4 with one
/// thread, 384 × 1,536 layers streamed from memory ran at 75 GFLOP/s for 16 rows
/// against 113 with the same weights in cache. 2 KiB is ~16 steps of the widest
/// block, about one memory latency.
pub const PREFETCH_BYTES: usize = 2048;

/// Asks for the cache line holding `p` and the next one. Only a hint: it never
/// faults, so `p` may point anywhere (past a panel's end, at the next one).
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = p as *const i8;
        // SAFETY: prefetch reads nothing the program can observe and cannot fault.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p);
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Generates `rows` for a kernel `tile::<R>`: full `MR` blocks, then the remainder.
macro_rules! rows_fn {
    ($(#[$meta:meta])* $mr:literal, [$($r:literal),*], $elem:ty) => {
        /// `c[0..m, 0..width] (+)= a[0..m, 0..kc] · b[0..kc, ..]` for one panel.
        ///
        /// # Safety
        /// `a` must be valid for `m` rows of `kc` floats at stride `lda`; `b` for `kc`
        /// rows of one panel; `c` for `m` rows of `width` floats at stride `ldc`, with
        /// `width` at most the panel width. The CPU must have this kernel's features.
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        pub unsafe fn rows(
            kc: usize,
            a: *const f32,
            lda: usize,
            m: usize,
            b: *const $elem,
            c: *mut f32,
            ldc: usize,
            width: usize,
            accumulate: bool,
        ) {
            let mut i = 0;
            while i + $mr <= m {
                // SAFETY: rows i..i+MR lie inside `a` and `c` (caller's promise).
                unsafe { tile::<$mr>(kc, a.add(i * lda), lda, b, c.add(i * ldc), ldc, width, accumulate) };
                i += $mr;
            }
            // SAFETY: as above, for the remaining m - i rows.
            let (a, c) = unsafe { (a.add(i * lda), c.add(i * ldc)) };
            match m - i {
                0 => {}
                // SAFETY: as above.
                $($r => unsafe { tile::<$r>(kc, a, lda, b, c, ldc, width, accumulate) },)*
                _ => unreachable!("remainder below MR"),
            }
        }
    };
}
pub(crate) use rows_fn;

/// Where a quantized kernel puts its block, and the scales it needs.
///
/// The int8 kernels add exact i32 dot products over each depth block of
/// [`INT8_BLOCK`] values, then fold each block into f32:
/// `acc[r][j] += row_scale[r][b] · (dot · col_scale[b][j]) − row_shift[r][b] · col_sum[b][j]`,
/// and store `c[r][j] (+)= acc[r][j]` for the first `width` columns. Activations are
/// quantized asymmetrically per row and block (a scale and a zero point), weights
/// symmetrically per output column and block (a scale each), so the shift undoes the
/// zero point through the block's column sums of the dequantized weights. The bf16 kernel's products are floats
/// already: it reads only `c`, `ldc`, `width` and `accumulate`.
#[derive(Clone, Copy)]
pub struct Dequant {
    pub c: *mut f32,
    pub ldc: usize,
    pub width: usize,
    /// Depth blocks per row.
    pub blocks: usize,
    /// `blocks` scales per row, row after row.
    pub row_scale: *const f32,
    /// `blocks` shifts (scale · zero point) per row.
    pub row_shift: *const f32,
    /// The panel's weight scales, a panel width per block (padding included).
    pub col_scale: *const f32,
    /// The panel's column sums of dequantized weights, a panel width per block.
    pub col_sum: *const f32,
    pub accumulate: bool,
}

/// Depth values per activation block of the int8 kernels: each block of a row gets
/// its own scale and zero point, so one large value costs precision only in its
/// block (measured: README, "Quantization").
pub const INT8_BLOCK: usize = 64;

impl Dequant {
    /// The same output, `rows` rows further down.
    ///
    /// # Safety
    /// Row `rows` must lie inside the caller's block.
    #[inline(always)]
    pub unsafe fn down(self, rows: usize) -> Self {
        // SAFETY: the caller keeps the offset inside the block; null pointers (the
        // bf16 kernel's unused scales) stay null.
        unsafe {
            let step = |p: *const f32| {
                if p.is_null() {
                    p
                } else {
                    p.add(rows * self.blocks)
                }
            };
            Dequant {
                c: self.c.add(rows * self.ldc),
                row_scale: step(self.row_scale),
                row_shift: step(self.row_shift),
                ..self
            }
        }
    }
}

/// Generates `rows` for a quantized kernel `tile::<R>(groups, a, lda, b, out)`: full
/// `MR` blocks, then the remainder. `groups` counts depth groups (the kernel's
/// elements per dot-product lane: 4 bytes, or 2 sixteen-bit values).
macro_rules! quant_rows_fn {
    ($(#[$meta:meta])* $mr:literal, [$($r:literal),*], $a:ty, $b:ty) => {
        /// `out[0..m, 0..width] (+)= dequantize(a[0..m] · b)` for one panel.
        ///
        /// # Safety
        /// `a` must be valid for `m` rows of `groups` groups at stride `lda`
        /// elements; `b` for `groups` groups of one panel; `out` as [`Dequant`]
        /// describes, for `m` rows. The CPU must have this kernel's features.
        $(#[$meta])*
        pub unsafe fn rows(
            groups: usize,
            a: *const $a,
            lda: usize,
            m: usize,
            b: *const $b,
            out: $crate::kernels::micro::Dequant,
        ) {
            let mut i = 0;
            while i + $mr <= m {
                // SAFETY: rows i..i+MR lie inside `a` and `out` (caller's promise).
                unsafe { tile::<$mr>(groups, a.add(i * lda), lda, b, out.down(i)) };
                i += $mr;
            }
            // SAFETY: as above, for the remaining m - i rows.
            let (a, out) = unsafe { (a.add(i * lda), out.down(i)) };
            match m - i {
                0 => {}
                // SAFETY: as above.
                $($r => unsafe { tile::<$r>(groups, a, lda, b, out) },)*
                _ => unreachable!("remainder below MR"),
            }
        }
    };
}
pub(crate) use quant_rows_fn;
