//! The portable kernel: plain Rust that LLVM vectorizes for the target's baseline
//! (SSE2 on x86-64, NEON on aarch64), for CPUs no hand-written kernel covers.

/// Rows per register block.
pub const MR: usize = 4;
/// Panel width.
pub const NR: usize = 16;

/// A panel element the kernel can widen to f32.
pub trait Element: Copy {
    fn widen(self) -> f32;
}

impl Element for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

/// Raw bfloat16 bits: the top half of an f32.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
pub struct Bf16(pub u16);

impl Element for Bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits((self.0 as u32) << 16)
    }
}

/// One `R × NR` block of `c`, over `kc` steps of depth.
///
/// # Safety
/// As `rows`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize, E: Element>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const E,
    c: *mut f32,
    ldc: usize,
    width: usize,
    accumulate: bool,
) {
    let mut acc = [[0f32; NR]; R];
    if accumulate {
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: row r of `c` holds `width` floats (caller's promise).
            let src = unsafe { std::slice::from_raw_parts(c.add(r * ldc), width) };
            row[..width].copy_from_slice(src);
        }
    }
    for kk in 0..kc {
        // SAFETY: depth step kk of the panel is NR elements inside `b`.
        let raw: &[E; NR] = unsafe { &*(b.add(kk * NR) as *const [E; NR]) };
        let bv: [f32; NR] = std::array::from_fn(|j| raw[j].widen());
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: element (r, kk) lies inside `a`.
            let av = unsafe { *a.add(r * lda + kk) };
            for j in 0..NR {
                // Not mul_add: without FMA in the target that is a libm call.
                row[j] += av * bv[j];
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        // SAFETY: row r of `c` holds `width` floats.
        let dst = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), width) };
        dst.copy_from_slice(&row[..width]);
    }
}

macro_rules! kernel {
    ($name:ident, $elem:ty) => {
        pub mod $name {
            #[inline(always)]
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
                // SAFETY: forwarded.
                unsafe { super::tile::<R, $elem>(kc, a, lda, b, c, ldc, width, accumulate) }
            }

            super::super::rows_fn!(4, [1, 2, 3], $elem);
        }
    };
}

kernel!(float, f32);
kernel!(bfloat, super::Bf16);

/// int8 in plain Rust: i8 activation codes (the unsigned code − 128) and weights,
/// i32 sums per depth block, groups of four along the depth (the NEON layout, so
/// aarch64 CPUs without `sdot` share its packing).
pub mod int8 {
    use crate::kernels::micro::{Dequant, INT8_BLOCK};

    pub const MR: usize = 4;
    pub const NR: usize = 16;
    /// Bytes of depth per lane.
    pub const GROUP: usize = 4;

    /// # Safety
    /// As `rows`.
    #[inline(always)]
    unsafe fn tile<const R: usize>(
        groups: usize,
        a: *const i8,
        lda: usize,
        b: *const i8,
        out: Dequant,
    ) {
        let per_block = INT8_BLOCK / GROUP;
        let mut acc = [[0f32; NR]; R];
        // SAFETY: `groups` groups of `a` per row and of the panel in `b`, `blocks`
        // scales and shifts per row, a panel width of sums and of scales per block,
        // and `width` floats per row of `c` (caller's promise).
        unsafe {
            let a = std::slice::from_raw_parts(a, (R - 1) * lda + groups * GROUP);
            let b = std::slice::from_raw_parts(b, groups * GROUP * NR);
            for blk in 0..groups / per_block {
                let mut dots = [[0i32; NR]; R];
                for g in blk * per_block..(blk + 1) * per_block {
                    let panel = &b[g * GROUP * NR..(g + 1) * GROUP * NR];
                    for (r, row) in dots.iter_mut().enumerate() {
                        let four = &a[r * lda + g * GROUP..r * lda + (g + 1) * GROUP];
                        for (j, v) in row.iter_mut().enumerate() {
                            let w = &panel[j * GROUP..(j + 1) * GROUP];
                            *v += four
                                .iter()
                                .zip(w)
                                .map(|(&x, &y)| x as i32 * y as i32)
                                .sum::<i32>();
                        }
                    }
                }
                for (r, (f, d)) in acc.iter_mut().zip(&dots).enumerate() {
                    let s = *out.row_scale.add(r * out.blocks + blk);
                    let m = *out.row_shift.add(r * out.blocks + blk);
                    for (j, (f, d)) in f.iter_mut().zip(d).enumerate() {
                        let w = *out.col_scale.add(blk * NR + j);
                        *f += s * (*d as f32 * w) - m * *out.col_sum.add(blk * NR + j);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                let c = std::slice::from_raw_parts_mut(out.c.add(r * out.ldc), out.width);
                for (j, o) in c.iter_mut().enumerate() {
                    *o = if out.accumulate { *o + row[j] } else { row[j] };
                }
            }
        }
    }

    crate::kernels::micro::quant_rows_fn!(4, [1, 2, 3], i8, i8);
}
