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
