//! Right-hand matrices packed in column panels, the layout every micro-kernel reads.
//!
//! A general GEMM library packs the right-hand matrix on every call; for an encoder
//! that matrix is almost always a weight, so we pack it once at load. With no packing
//! left in the hot path even a short batch (tens of tokens) runs at the kernel's rate,
//! and threads share one copy of the weights instead of each packing its own.
//! Attention packs its keys and values per head with the same functions.
//!
//! Layout: panel `p` holds columns `nr·p .. nr·p + nr` of the `k × n` matrix `B`, row
//! after row: `data[(p·k + kk)·nr + j] = B[kk][nr·p + j]`, zero past `n`. The panel
//! width `nr` is the kernel's register-block width (32 floats on AVX-512, 16 on the
//! others), so weights are packed for the instruction set that will read them.

use super::Isa;

impl Isa {
    /// Panel width of this instruction set's micro-kernel.
    pub const fn nr(self) -> usize {
        match self {
            Isa::Avx512 => 32,
            Isa::Avx2 | Isa::Neon | Isa::Portable => 16,
        }
    }
}

/// Elements a `k × n` matrix takes once packed in panels of `nr`.
pub const fn packed_len(k: usize, n: usize, nr: usize) -> usize {
    n.div_ceil(nr) * k * nr
}

/// How a packed matrix's elements are stored. Weights stay in the precision of their
/// checkpoint: a bf16 or f16 model takes half the memory of its f32 widening, and the
/// kernels widen each panel row as they read it (exactly: every bf16 and f16 value is
/// an f32 value), so the products are the same as on widened weights.
#[derive(Clone)]
pub enum Elements {
    F32(Vec<f32>),
    /// Raw bfloat16 bits.
    Bf16(Vec<u16>),
    /// Raw IEEE half bits.
    F16(Vec<u16>),
}

#[derive(Clone, Copy)]
pub enum ElementsRef<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
    F16(&'a [u16]),
}

impl Elements {
    pub fn bytes(&self) -> usize {
        match self {
            Elements::F32(v) => 4 * v.len(),
            Elements::Bf16(v) | Elements::F16(v) => 2 * v.len(),
        }
    }

    pub fn view(&self) -> ElementsRef<'_> {
        match self {
            Elements::F32(v) => ElementsRef::F32(v),
            Elements::Bf16(v) => ElementsRef::Bf16(v),
            Elements::F16(v) => ElementsRef::F16(v),
        }
    }
}

impl ElementsRef<'_> {
    pub fn len(&self) -> usize {
        match self {
            ElementsRef::F32(v) => v.len(),
            ElementsRef::Bf16(v) | ElementsRef::F16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The address of element `i`, for prefetching: computed without bounds (it may
    /// lie past the end) and never read through.
    pub fn byte_ptr(&self, i: usize) -> *const u8 {
        match self {
            ElementsRef::F32(v) => v.as_ptr().wrapping_add(i) as *const u8,
            ElementsRef::Bf16(v) | ElementsRef::F16(v) => v.as_ptr().wrapping_add(i) as *const u8,
        }
    }
}

/// A PyTorch `nn.Linear` weight `[n, k]` as the checkpoint stores it.
#[derive(Clone, Copy)]
pub enum Weight<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
    F16(&'a [u16]),
}

/// An owned packed matrix (a weight, packed at load).
#[derive(Clone)]
pub struct Packed {
    pub data: Elements,
    pub k: usize,
    pub n: usize,
    pub nr: usize,
}

impl Packed {
    /// Packs PyTorch's `nn.Linear` weight `[n, k]`, which is `Bᵀ`, keeping its storage.
    pub fn from_torch(weight: Weight<'_>, n: usize, k: usize, nr: usize) -> Self {
        fn pack<T: Copy + Default>(w: &[T], n: usize, k: usize, nr: usize) -> Vec<T> {
            assert!(w.len() >= n * k, "weight holds {} of {n}×{k}", w.len());
            let mut out = vec![T::default(); packed_len(k, n, nr)];
            // SAFETY: `w` holds n rows of k elements, checked above.
            unsafe { pack_transposed(w.as_ptr(), k, n, k, nr, &mut out) };
            out
        }
        let data = match weight {
            Weight::F32(w) => Elements::F32(pack(w, n, k, nr)),
            Weight::Bf16(w) => Elements::Bf16(pack(w, n, k, nr)),
            Weight::F16(w) => Elements::F16(pack(w, n, k, nr)),
        };
        Packed { data, k, n, nr }
    }

    pub fn view(&self) -> PackedRef<'_> {
        PackedRef {
            data: self.data.view(),
            k: self.k,
            n: self.n,
            nr: self.nr,
        }
    }
}

/// A borrowed packed matrix: a weight, or a head's keys or values in scratch.
#[derive(Clone, Copy)]
pub struct PackedRef<'a> {
    pub data: ElementsRef<'a>,
    pub k: usize,
    pub n: usize,
    pub nr: usize,
}

/// Packs `n` rows of `k` elements at stride `ld` (an `[n, k]` matrix, used as its
/// transpose) into `out`, which must hold [`packed_len`]`(k, n, nr)` elements.
///
/// # Safety
/// `src` must be valid for `n` rows of `k` elements at stride `ld`.
pub unsafe fn pack_transposed<T: Copy + Default>(
    src: *const T,
    ld: usize,
    n: usize,
    k: usize,
    nr: usize,
    out: &mut [T],
) {
    let panels = n.div_ceil(nr);
    assert!(out.len() >= panels * k * nr);
    for p in 0..panels {
        let width = nr.min(n - p * nr);
        let panel = &mut out[p * k * nr..(p + 1) * k * nr];
        for j in 0..width {
            // SAFETY: row p·nr + j < n lies inside `src` (caller's promise).
            let row = unsafe { std::slice::from_raw_parts(src.add((p * nr + j) * ld), k) };
            for (kk, v) in row.iter().enumerate() {
                panel[kk * nr + j] = *v;
            }
        }
        if width < nr {
            for kk in 0..k {
                panel[kk * nr + width..(kk + 1) * nr].fill(T::default());
            }
        }
    }
}

/// [`pack_transposed`] for f32 on the instruction set `isa`: attention packs every
/// head's keys this way, per text and layer, so the x86 kernels move them as 8 × 8
/// blocks in registers instead of one float at a time. Measured on Zen 3
/// (examples/attention_speed, 75 keys of 32): the scalar loop was ~15% of
/// attention's time.
///
/// # Safety
/// `src` must be valid for `n` rows of `k` floats at stride `ld`; `isa` must be
/// supported by the CPU.
pub unsafe fn pack_transposed_f32(
    isa: Isa,
    src: *const f32,
    ld: usize,
    n: usize,
    k: usize,
    nr: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512) && nr.is_multiple_of(8) {
        // SAFETY: forwarded from the caller; both instruction sets include AVX.
        return unsafe { transposed_avx(src, ld, n, k, nr, out) };
    }
    let _ = isa;
    // SAFETY: forwarded from the caller.
    unsafe { pack_transposed(src, ld, n, k, nr, out) }
}

/// # Safety
/// As [`pack_transposed_f32`], and the CPU must have AVX; `nr` a multiple of 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transposed_avx(
    src: *const f32,
    ld: usize,
    n: usize,
    k: usize,
    nr: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let panels = n.div_ceil(nr);
    assert!(out.len() >= panels * k * nr);
    let whole_k = k / 8 * 8;
    // Rows in whole groups of 8; the rest (and any depth past a multiple of 8) go
    // one float at a time below.
    let whole_n = n / 8 * 8;
    let dst = out.as_mut_ptr();
    for j0 in (0..whole_n).step_by(8) {
        let (p, j) = (j0 / nr, j0 % nr);
        for kk in (0..whole_k).step_by(8) {
            // SAFETY: rows j0..j0+8 < n and columns kk..kk+8 <= k lie inside `src`
            // (caller's promise); the 8 panel rows kk..kk+8 at columns j..j+8 of panel
            // p lie inside `out` (asserted above).
            unsafe {
                let row = |r: usize| _mm256_loadu_ps(src.add((j0 + r) * ld + kk));
                let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                let (r4, r5, r6, r7) = (row(4), row(5), row(6), row(7));
                // Pairs of rows interleaved, then quads, then the 128-bit halves
                // swapped: column c of the block ends up in register c.
                let t0 = _mm256_unpacklo_ps(r0, r1);
                let t1 = _mm256_unpackhi_ps(r0, r1);
                let t2 = _mm256_unpacklo_ps(r2, r3);
                let t3 = _mm256_unpackhi_ps(r2, r3);
                let t4 = _mm256_unpacklo_ps(r4, r5);
                let t5 = _mm256_unpackhi_ps(r4, r5);
                let t6 = _mm256_unpacklo_ps(r6, r7);
                let t7 = _mm256_unpackhi_ps(r6, r7);
                let q0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let q1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let q2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let q3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let q4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let q5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let q6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let q7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let cols = [
                    _mm256_permute2f128_ps::<0x20>(q0, q4),
                    _mm256_permute2f128_ps::<0x20>(q1, q5),
                    _mm256_permute2f128_ps::<0x20>(q2, q6),
                    _mm256_permute2f128_ps::<0x20>(q3, q7),
                    _mm256_permute2f128_ps::<0x31>(q0, q4),
                    _mm256_permute2f128_ps::<0x31>(q1, q5),
                    _mm256_permute2f128_ps::<0x31>(q2, q6),
                    _mm256_permute2f128_ps::<0x31>(q3, q7),
                ];
                for (c, v) in cols.into_iter().enumerate() {
                    _mm256_storeu_ps(dst.add((p * k + kk + c) * nr + j), v);
                }
            }
        }
        for kk in whole_k..k {
            for r in 0..8 {
                // SAFETY: as above, one float.
                unsafe { *dst.add((p * k + kk) * nr + j + r) = *src.add((j0 + r) * ld + kk) };
            }
        }
    }
    // The last rows, and the last panel's padding.
    for jj in whole_n..panels * nr {
        let (p, j) = (jj / nr, jj % nr);
        for kk in 0..k {
            // SAFETY: row jj < n lies inside `src`; the element lies inside `out`.
            unsafe {
                *dst.add((p * k + kk) * nr + j) = if jj < n { *src.add(jj * ld + kk) } else { 0.0 };
            }
        }
    }
}

/// Packs a `[k, n]` row-major f32 matrix at row stride `ld` (used as it is) into
/// `out`, which must hold [`packed_len`]`(k, n, nr)` floats.
///
/// # Safety
/// `src` must be valid for `k` rows of `n` floats at stride `ld`.
pub unsafe fn pack_plain(
    src: *const f32,
    ld: usize,
    k: usize,
    n: usize,
    nr: usize,
    out: &mut [f32],
) {
    let panels = n.div_ceil(nr);
    assert!(out.len() >= panels * k * nr);
    for p in 0..panels {
        let width = nr.min(n - p * nr);
        for kk in 0..k {
            let dst = &mut out[(p * k + kk) * nr..(p * k + kk + 1) * nr];
            // SAFETY: row kk < k, columns p·nr .. p·nr + width ≤ n (caller's promise).
            let row = unsafe { std::slice::from_raw_parts(src.add(kk * ld + p * nr), width) };
            dst[..width].copy_from_slice(row);
            dst[width..].fill(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_f32_packs_as_the_generic_loop() {
        // Rows and depths on and off multiples of 8, a last panel partly full; the
        // source exactly as long as its last row needs.
        for n in [1, 7, 8, 16, 17, 40, 75] {
            for k in [3, 8, 32, 35] {
                let ld = k + 5;
                let src: Vec<f32> = (0..(n - 1) * ld + k)
                    .map(|i| i as f32 * 0.5 - 3.0)
                    .collect();
                let check = |nr: usize, pack: &dyn Fn(&mut [f32]), what: &str| {
                    let mut want = vec![f32::NAN; packed_len(k, n, nr)];
                    let mut got = want.clone();
                    // SAFETY: src holds n rows of k floats at stride ld.
                    unsafe { pack_transposed(src.as_ptr(), ld, n, k, nr, &mut want) };
                    pack(&mut got);
                    assert_eq!(
                        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{what} nr={nr} n={n} k={k}"
                    );
                };
                for isa in Isa::available() {
                    let nr = isa.nr();
                    // SAFETY: as above; the isa is this CPU's.
                    let pack = |out: &mut [f32]| unsafe {
                        pack_transposed_f32(isa, src.as_ptr(), ld, n, k, nr, out)
                    };
                    check(nr, &pack, isa.name());
                }
                // The AVX transposer at every panel width a kernel uses, whatever
                // this CPU's best instruction set is.
                #[cfg(target_arch = "x86_64")]
                if std::is_x86_feature_detected!("avx") {
                    for nr in [8, 16, 32] {
                        // SAFETY: as above, and the CPU has AVX.
                        let pack = |out: &mut [f32]| unsafe {
                            transposed_avx(src.as_ptr(), ld, n, k, nr, out)
                        };
                        check(nr, &pack, "avx");
                    }
                }
            }
        }
    }

    #[test]
    fn both_packings_agree_on_the_same_matrix() {
        // B is 5 × 37 (k × n); torch's weight is its transpose.
        let (k, n) = (5, 37);
        let b: Vec<f32> = (0..k * n).map(|i| i as f32).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        for nr in [16, 32] {
            let a = Packed::from_torch(Weight::F32(&bt), n, k, nr);
            let Elements::F32(data) = &a.data else {
                unreachable!()
            };
            let mut plain = vec![f32::NAN; packed_len(k, n, nr)];
            unsafe { pack_plain(b.as_ptr(), n, k, n, nr, &mut plain) };
            assert_eq!(data, &plain);
            // Spot checks: element (kk, j) and zero padding.
            let at = |kk: usize, j: usize| data[((j / nr) * k + kk) * nr + j % nr];
            assert_eq!(at(3, 20), b[3 * n + 20]);
            assert_eq!(data[((n / nr) * k + 4) * nr + n % nr], 0.0);
            // 16-bit storage packs the same layout.
            let bits: Vec<u16> = bt
                .iter()
                .map(|x| half::bf16::from_f32(*x).to_bits())
                .collect();
            let Elements::Bf16(packed) = Packed::from_torch(Weight::Bf16(&bits), n, k, nr).data
            else {
                unreachable!()
            };
            assert!(packed
                .iter()
                .zip(&plain)
                .all(|(h, f)| half::bf16::from_bits(*h).to_f32() == *f));
        }
    }
}
