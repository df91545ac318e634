//! Matrix multiplication for `x · Wᵀ`, split across the engine's threads.
//!
//! The inner kernel is `matrixmultiply`'s (AVX-512/AVX2/NEON picked at run time). We
//! own the split: row blocks per thread when there are enough tokens (each thread
//! packs the weights once for many rows), column blocks when there are few (a single
//! short query still uses every core). The epilogue (bias, GELU, residual layer norm)
//! runs on each thread's block while it is still in cache.

use rayon::prelude::*;

use super::packed;

/// How a weight is stored: packed panels for our AVX-512 kernel, or `[in, out]`
/// row-major for matrixmultiply on other CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Packed,
    RowMajor,
}

impl Layout {
    /// The fastest layout this CPU can use.
    pub fn for_cpu() -> Self {
        if super::isa() == super::Isa::Avx512 {
            Layout::Packed
        } else {
            Layout::RowMajor
        }
    }
}

/// A linear layer `y = x · Wᵀ + b`, its weight stored for the kernel that will run it.
pub struct Linear {
    w: Vec<f32>,
    layout: Layout,
    pub bias: Vec<f32>,
    pub k: usize,
    pub n: usize,
}

/// Rows per task when splitting a long batch: small enough to balance two busy cores,
/// large enough that each task reuses a weight block from L1 many times.
const ROWS_PER_TASK: usize = 96;

impl Linear {
    /// From PyTorch's `[out, in]` = `[n, k]` weight layout.
    pub fn from_torch(weight: &[f32], bias: Vec<f32>, n: usize, k: usize) -> Self {
        Self::with_layout(weight, bias, n, k, Layout::for_cpu())
    }

    pub fn with_layout(weight: &[f32], bias: Vec<f32>, n: usize, k: usize, layout: Layout) -> Self {
        assert_eq!(weight.len(), n * k);
        assert_eq!(bias.len(), n);
        let w = match layout {
            Layout::Packed => packed::pack(weight, n, k),
            Layout::RowMajor => transpose(weight, n, k),
        };
        Linear {
            w,
            layout,
            bias,
            k,
            n,
        }
    }

    pub fn params(&self) -> usize {
        self.k * self.n + self.bias.len()
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
        let threads = rayon::current_num_threads();
        if threads == 1 || m * n * k < 1 << 18 {
            // SAFETY: `out` is m × n, checked above.
            unsafe { self.block(x, m, 0..self.n, out.as_mut_ptr(), accumulate) };
            epilogue(out);
        } else if m >= threads * 48 {
            // Row blocks: every task runs all columns for its rows, then its epilogue.
            let rows = ROWS_PER_TASK.min(m.div_ceil(threads).next_multiple_of(12));
            out.par_chunks_mut(rows * n)
                .zip(x.par_chunks(rows * k))
                .for_each(|(c, a)| {
                    // SAFETY: `c` is this task's rows of `out`, whole.
                    unsafe { self.block(a, c.len() / n, 0..self.n, c.as_mut_ptr(), accumulate) };
                    epilogue(c);
                });
        } else {
            // Few rows: split the columns, then run the epilogue over rows.
            let cols = n.div_ceil(threads).next_multiple_of(packed::NR);
            let c = SharedMut(out.as_mut_ptr());
            (0..n.div_ceil(cols)).into_par_iter().for_each(|j| {
                let cols = j * cols..((j + 1) * cols).min(n);
                // SAFETY: `out` is m × n; each task writes only its own columns.
                unsafe { self.block(x, m, cols, c.get(), accumulate) };
            });
            let rows = m.div_ceil(threads).max(1);
            out.par_chunks_mut(rows * n).for_each(epilogue);
        }
    }

    /// `out[.., cols] (+)= x · W[.., cols]` on this thread. `cols` starts on a panel edge.
    ///
    /// # Safety
    /// `out` must be valid for `m` rows of `n` floats, and no one else may access
    /// the columns `cols` of those rows during the call.
    unsafe fn block(
        &self,
        x: &[f32],
        m: usize,
        cols: std::ops::Range<usize>,
        out: *mut f32,
        accumulate: bool,
    ) {
        let (k, n) = (self.k, self.n);
        assert!(x.len() >= m * k && cols.end <= n);
        match self.layout {
            #[cfg(target_arch = "x86_64")]
            Layout::Packed => {
                let panels = cols.start / packed::NR..cols.end.div_ceil(packed::NR);
                // Packed is only chosen when isa() found AVX-512; `x` holds m rows of
                // k, the caller vouches for `out`, and `w` was packed for this k and n.
                packed::gemm(x.as_ptr(), k, m, &self.w, k, n, panels, out, n, accumulate)
            }
            _ => sgemm(
                x,
                m,
                k,
                &self.w,
                n,
                cols.start,
                cols.len(),
                out,
                n,
                accumulate,
            ),
        }
    }
}

/// `[n, k]` to `[k, n]`, in tiles to stay in cache.
fn transpose(weight: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut w = vec![0f32; k * n];
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
    w
}

/// matrixmultiply on `c[.., col0..col0+width] (+)= a · b[.., col0..col0+width]`,
/// `b` being `k × ldb` row-major and `c` having row stride `ldc`.
#[allow(clippy::too_many_arguments)]
///
/// # Safety
/// `c` must be valid for `m` rows at stride `ldc` covering columns `col0..col0+width`.
unsafe fn sgemm(
    a: &[f32],
    m: usize,
    k: usize,
    b: &[f32],
    ldb: usize,
    col0: usize,
    width: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    assert!(a.len() >= m * k);
    assert!(k == 0 || b.len() >= (k - 1) * ldb + col0 + width);
    let beta = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: `a` and `b` bounds were checked above, `c` is the caller's promise;
    // matrixmultiply touches only m×k, k×width and m×width with the given strides.
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
            c.add(col0),
            ldc as isize,
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
    fn forward_matches_naive_for_every_split_and_layout() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        // n = 70: a partial last panel; k = 300: two depth passes.
        let (n, k) = (70, 300);
        let weight: Vec<f32> = (0..n * k)
            .map(|i| ((i * 31) % 17) as f32 * 0.1 - 0.8)
            .collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        let mut layouts = vec![Layout::RowMajor];
        if Layout::for_cpu() == Layout::Packed {
            layouts.push(Layout::Packed);
        }
        for layout in layouts {
            let lin = Linear::with_layout(&weight, bias.clone(), n, k, layout);
            // 1: single call; 13: column split; 200 and 1000: row split with a remainder.
            for m in [1, 13, 200, 1000] {
                let x: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 13) % 11) as f32 * 0.2 - 1.0)
                    .collect();
                let want = naive(&x, m, &weight, &bias, n, k);
                for accumulate in [false, true] {
                    let mut out = vec![if accumulate { 1.0 } else { f32::NAN }; m * n];
                    pool.install(|| {
                        lin.forward(&x, m, &mut out, accumulate, &|rows| {
                            super::super::math::bias_add(rows, &lin.bias)
                        })
                    });
                    let extra = if accumulate { 1.0 } else { 0.0 };
                    for (g, w) in out.iter().zip(&want) {
                        assert!(
                            (g - w - extra).abs() < 1e-3,
                            "{layout:?} m={m}: {g} vs {}",
                            w + extra
                        );
                    }
                }
            }
        }
    }
}
