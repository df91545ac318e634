//! Matrix multiplication for `x · Wᵀ`, split across the engine's threads.
//!
//! The inner kernel is `matrixmultiply`'s (AVX-512/AVX2/NEON picked at run time). We
//! own the split: row blocks per thread when there are enough tokens (each thread
//! packs the weights once for many rows), column blocks when there are few (a single
//! short query still uses every core). The epilogue (bias, GELU, residual layer norm)
//! runs on each thread's block while it is still in cache.

use rayon::prelude::*;

/// A linear layer kept as `[in, out]` row-major, the layout the GEMM packs fastest.
pub struct Linear {
    pub w: Vec<f32>,
    pub bias: Vec<f32>,
    pub k: usize,
    pub n: usize,
}

impl Linear {
    /// From PyTorch's `[out, in]` weight layout.
    pub fn from_torch(weight: &[f32], bias: Vec<f32>, n: usize, k: usize) -> Self {
        assert_eq!(weight.len(), n * k);
        assert_eq!(bias.len(), n);
        let mut w = vec![0f32; k * n];
        // Transpose in tiles to stay in cache.
        const T: usize = 32;
        for r0 in (0..n).step_by(T) {
            for c0 in (0..k).step_by(T) {
                for r in r0..(r0 + T).min(n) {
                    for c in c0..(c0 + T).min(k) {
                        w[c * n + r] = weight[r * k + c];
                    }
                }
            }
        }
        Linear { w, bias, k, n }
    }

    /// Stacks layers that read the same input (query, key, value) into one, so that
    /// one GEMM computes all three.
    pub fn concat(parts: &[Linear]) -> Self {
        let k = parts[0].k;
        assert!(parts.iter().all(|p| p.k == k));
        let n: usize = parts.iter().map(|p| p.n).sum();
        let mut w = vec![0f32; k * n];
        for row in 0..k {
            let mut col = 0;
            for p in parts {
                w[row * n + col..row * n + col + p.n]
                    .copy_from_slice(&p.w[row * p.n..(row + 1) * p.n]);
                col += p.n;
            }
        }
        let bias = parts.iter().flat_map(|p| p.bias.iter().copied()).collect();
        Linear { w, bias, k, n }
    }

    pub fn params(&self) -> usize {
        self.w.len() + self.bias.len()
    }

    /// `out = x · W` (or `out += x · W` when `accumulate`), then `epilogue` on each block
    /// of whole rows. `x` is `m × k`, `out` is `m × n`. Runs on the current rayon pool.
    pub fn forward(
        &self,
        x: &[f32],
        m: usize,
        out: &mut [f32],
        accumulate: bool,
        epilogue: &(dyn Fn(&mut [f32]) + Sync),
    ) {
        let (k, n) = (self.k, self.n);
        assert_eq!(x.len(), m * k);
        assert_eq!(out.len(), m * n);
        if m == 0 {
            return;
        }
        let beta = if accumulate { 1.0 } else { 0.0 };
        let threads = rayon::current_num_threads();
        let work = m * n * k;
        if threads == 1 || work < 1 << 18 {
            sgemm(x, m, k, &self.w, n, 0, n, out, beta);
            epilogue(out);
        } else if m >= threads * 32 {
            let rows = m.div_ceil(threads).next_multiple_of(8);
            out.par_chunks_mut(rows * n)
                .zip(x.par_chunks(rows * k))
                .for_each(|(c, a)| {
                    let mm = c.len() / n;
                    sgemm(a, mm, k, &self.w, n, 0, n, c, beta);
                    epilogue(c);
                });
        } else {
            let cols = n.div_ceil(threads).next_multiple_of(16);
            let c = SharedMut(out.as_mut_ptr());
            (0..n.div_ceil(cols)).into_par_iter().for_each(|j| {
                let c0 = j * cols;
                let width = cols.min(n - c0);
                // SAFETY: each task writes only columns c0..c0+width of `out`, which no
                // other task touches; `out` outlives the parallel loop.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        width,
                        1.0,
                        x.as_ptr(),
                        k as isize,
                        1,
                        self.w.as_ptr().add(c0),
                        n as isize,
                        1,
                        beta,
                        c.get().add(c0),
                        n as isize,
                        1,
                    );
                }
            });
            let rows = m.div_ceil(threads).max(1);
            out.par_chunks_mut(rows * n).for_each(|c| epilogue(c));
        }
    }
}

/// `c = a · b[.., col0..col0+width] (+ beta c)` with `b` row stride `ldb`.
#[allow(clippy::too_many_arguments)]
fn sgemm(
    a: &[f32],
    m: usize,
    k: usize,
    b: &[f32],
    ldb: usize,
    col0: usize,
    width: usize,
    c: &mut [f32],
    beta: f32,
) {
    assert!(
        a.len() >= m * k && c.len() >= m * width && b.len() >= col0 + (k.max(1) - 1) * ldb + width
    );
    // SAFETY: the bounds were checked above; matrixmultiply reads and writes only
    // within m×k, k×width and m×width with the given strides.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            width,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr().add(col0),
            ldb as isize,
            1,
            beta,
            c.as_mut_ptr(),
            width as isize,
            1,
        );
    }
}

/// A raw pointer that parallel tasks may share because each writes a disjoint part.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub *mut f32);
// SAFETY: users guarantee disjoint writes (see each use).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}
impl SharedMut {
    /// A method (rather than the field) so that closures capture the whole wrapper.
    #[inline(always)]
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], m: usize, weight: &[f32], bias: &[f32], n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = bias[j] as f64;
                for t in 0..k {
                    s += x[i * k + t] as f64 * weight[j * k + t] as f64;
                }
                out[i * n + j] = s as f32;
            }
        }
        out
    }

    #[test]
    fn forward_matches_naive_for_every_split() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (n, k) = (70, 45);
        let weight: Vec<f32> = (0..n * k)
            .map(|i| ((i * 31) % 17) as f32 * 0.1 - 0.8)
            .collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        let lin = Linear::from_torch(&weight, bias.clone(), n, k);
        // m = 3: column split; m = 200: row split; m = 1: single call.
        for m in [1, 3, 200] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 13) % 11) as f32 * 0.2 - 1.0)
                .collect();
            let want = naive(&x, m, &weight, &bias, n, k);
            let mut out = vec![f32::NAN; m * n];
            let b = lin.bias.clone();
            pool.install(|| {
                lin.forward(&x, m, &mut out, false, &|rows| {
                    super::super::math::bias_add(rows, &b)
                })
            });
            for (g, w) in out.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4, "m={m}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn concat_stacks_outputs() {
        let a = Linear::from_torch(&[1.0, 2.0], vec![0.5], 1, 2);
        let b = Linear::from_torch(&[3.0, 4.0, 5.0, 6.0], vec![0.1, 0.2], 2, 2);
        let c = Linear::concat(&[a, b]);
        assert_eq!((c.k, c.n), (2, 3));
        assert_eq!(c.w, vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
        assert_eq!(c.bias, vec![0.5, 0.1, 0.2]);
    }
}
