//! Matrix products on packed right-hand matrices, and linear layers built on them.
//!
//! [`gemm`] is the one entry point to the micro-kernels: attention calls it on a
//! head's packed keys and values, [`Linear`] on its weights. `Linear` owns the split
//! across the engine's threads: row blocks when there are enough tokens (each thread
//! streams its rows past every weight block), column blocks when there are few (a
//! single short query still uses every core). The epilogue (bias, GELU, residual and
//! norm) runs on each thread's rows while they are still in cache.

use std::ops::Range;

use rayon::prelude::*;

use super::micro;
use super::pack::{ElementsRef, Packed, PackedRef, Weight};
use super::quant::{LowKernel, LowPacked, LowRows};
use super::Isa;

impl Isa {
    /// Whether this instruction set has a kernel that reads f16 panels (the others
    /// get f16 weights widened to f32 at load).
    pub fn reads_f16(self) -> bool {
        match self {
            Isa::Avx512 => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::is_x86_feature_detected!("f16c"),
            _ => false,
        }
    }

    /// Rows up to which a product runs its whole depth in one pass instead of
    /// [`Isa::depth_block`]-deep blocks. Few rows (a query) read each weight once,
    /// mostly from memory: one pass reads each panel front to back, which the
    /// prefetchers follow, where blocks jump from panel to panel every
    /// `depth_block()` rows of depth. Measured on Zen 3 (examples/gemm_stream, one
    /// thread, 384 × 1,536 weights from memory): 16 rows 52-62 -> 68-70 GFLOP/s, 32
    /// rows 62-72 -> 74-77. Batches split into [`Isa::rows_per_task`] rows fall under
    /// it too (see there). On AVX-512 only a query's few rows (one 12-row block and
    /// a remainder at most): on an Intel Xeon (AMX machine, one thread,
    /// examples/gemm_stream, weights from beyond L2, 3 alternating runs) 8 rows
    /// 85-94 -> 97-99 GFLOP/s, 16 rows 107-117 -> 114-123; all-MiniLM-L6-v2's
    /// 16-token query on one thread 3.28 -> 2.99 ms. From 24 to 48 rows it measured
    /// the same either way, and depth blocks taken panel by panel (96-192 deep)
    /// were slower than either (all measured with f32 panels; bf16 and f16 panels
    /// follow the same rule, as does Zen 4, unmeasured). Other instruction sets keep
    /// blocks until measured.
    pub const fn whole_depth_rows(self) -> usize {
        match self {
            Isa::Avx2 => 48,
            Isa::Avx512 => 16,
            _ => 0,
        }
    }

    /// Depth per pass of a product with more than [`Isa::whole_depth_rows`] rows: a
    /// `depth × NR` block of the right-hand matrix stays in L1 while rows stream past
    /// it, and each pass but the first reloads the output block it adds to. On AVX2 a
    /// 384-deep block (24 KiB of f32 panel) still fits a 32 KiB L1, and a 384-wide
    /// layer runs in one pass instead of 256 + 128: measured on Zen 3 with 96-row
    /// tasks (MiniLM, 1,000 workload texts, batch 32, 5 alternating runs) 6,761 ->
    /// 7,008 tokens/s median sorted, 6,537 -> 6,786 in file order. Since tasks are 48
    /// rows on AVX2 (on one thread too) it applies to products of more rows in one
    /// call: the column split of 49-95 rows, attention's products for long texts.
    /// AVX-512's 32-wide panels keep 256 (32 KiB), as measured on Zen 4.
    pub const fn depth_block(self) -> usize {
        match self {
            Isa::Avx2 => 384,
            _ => 256,
        }
    }

    /// Rows per task of a long batch, split across threads or run in turn on one:
    /// small enough to balance two busy cores and to keep a task's rows and output
    /// in L2, large enough that each weight row loaded serves many rows. A multiple
    /// of the kernels' MR. On AVX2 48 is also [`Isa::whole_depth_rows`], so each task runs a
    /// product's whole depth in one pass, the weight panel streaming from L2 (the
    /// MLP's 1,536-deep way down among them). Measured on Zen 3
    /// (examples/layer_speed, MiniLM's four layers, 2,400 rows, 2 threads, two runs
    /// each): f32 96-row tasks in 384-deep blocks 93.1-95.0 G MAC/s, 72 rows
    /// 93.0-93.9, 48 rows in one pass 94.3-95.6 (the way down 91 -> 96); int8 96 rows
    /// 104-111, 48 rows 115-116. AVX-512 keeps the 96 measured on Zen 4, whose L2 is
    /// twice Zen 3's.
    pub const fn rows_per_task(self) -> usize {
        match self {
            Isa::Avx2 => 48,
            _ => 96,
        }
    }

    /// Rows of the micro-kernel's register block.
    pub const fn mr(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => micro::avx512::MR,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => micro::avx2::MR,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => micro::neon::MR,
            _ => micro::portable::MR,
        }
    }
}

/// `c (+)= a · B[depth, columns of panels]`.
///
/// `a` points at the element of its first row that pairs with depth `depth.start`;
/// `c` points at the first column of panel `panels.start`. Columns past `b.n` in the
/// last panel are neither read nor written in `c`.
///
/// # Safety
/// `isa` must be supported by the CPU and `b` packed with `isa.nr()`. `a` must be
/// valid for `m` rows of `depth.len()` floats at stride `lda`; `c` for `m` rows at
/// stride `ldc` covering every column of the panels (up to `b.n`), and no one else
/// may touch those elements during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    isa: Isa,
    a: *const f32,
    lda: usize,
    m: usize,
    b: PackedRef<'_>,
    panels: Range<usize>,
    depth: Range<usize>,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let nr = b.nr;
    assert_eq!(nr, isa.nr(), "matrix packed for another kernel");
    assert!(depth.end <= b.k && panels.end <= b.n.div_ceil(nr));
    assert!(b.data.len() >= packed_end(b.k, panels.end, nr));
    if m == 0 {
        return;
    }
    let mut k0 = depth.start;
    while k0 < depth.end {
        let kc = if m <= isa.whole_depth_rows() {
            depth.end - k0
        } else {
            isa.depth_block().min(depth.end - k0)
        };
        let acc = accumulate || k0 > depth.start;
        for p in panels.clone() {
            let width = nr.min(b.n - p * nr);
            let at = (p * b.k + k0) * nr;
            // The kernel prefetches ahead inside this panel; start the next one's
            // stream now, since it lies a whole panel further on.
            let next = at + b.k * nr;
            for line in (0..micro::PREFETCH_BYTES).step_by(128) {
                micro::prefetch(b.data.byte_ptr(next).wrapping_add(line));
            }
            // SAFETY: the panel's depth rows k0..k0+kc lie inside `b.data` (checked
            // above); `a` and `c` are the caller's promise, offset inside their bounds;
            // each arm runs the kernel of the isa the caller vouched for.
            unsafe {
                let ap = a.add(k0 - depth.start);
                let cp = c.add((p - panels.start) * nr);
                macro_rules! run {
                    ($kernel:path, $data:expr) => {
                        $kernel(kc, ap, lda, m, $data.as_ptr().add(at), cp, ldc, width, acc)
                    };
                }
                match (isa, b.data) {
                    #[cfg(target_arch = "x86_64")]
                    (Isa::Avx512, ElementsRef::F32(d)) => run!(micro::avx512::float::rows, d),
                    #[cfg(target_arch = "x86_64")]
                    (Isa::Avx512, ElementsRef::Bf16(d)) => run!(micro::avx512::bfloat::rows, d),
                    #[cfg(target_arch = "x86_64")]
                    (Isa::Avx512, ElementsRef::F16(d)) => run!(micro::avx512::half::rows, d),
                    #[cfg(target_arch = "x86_64")]
                    (Isa::Avx2, ElementsRef::F32(d)) => run!(micro::avx2::float::rows, d),
                    #[cfg(target_arch = "x86_64")]
                    (Isa::Avx2, ElementsRef::Bf16(d)) => run!(micro::avx2::bfloat::rows, d),
                    #[cfg(target_arch = "x86_64")]
                    (Isa::Avx2, ElementsRef::F16(d)) => run!(micro::avx2::half::rows, d),
                    #[cfg(target_arch = "aarch64")]
                    (Isa::Neon, ElementsRef::F32(d)) => run!(micro::neon::float::rows, d),
                    #[cfg(target_arch = "aarch64")]
                    (Isa::Neon, ElementsRef::Bf16(d)) => run!(micro::neon::bfloat::rows, d),
                    (_, ElementsRef::F32(d)) => run!(micro::portable::float::rows, d),
                    (_, ElementsRef::Bf16(d)) => {
                        let d = std::slice::from_raw_parts(
                            d.as_ptr() as *const micro::portable::Bf16,
                            d.len(),
                        );
                        run!(micro::portable::bfloat::rows, d)
                    }
                    (_, ElementsRef::F16(_)) => {
                        unreachable!("f16 panels are only packed for kernels that read them")
                    }
                }
            }
        }
        k0 += kc;
    }
}

/// Elements up to the end of panel `panels_end` of a `k`-deep packed matrix.
fn packed_end(k: usize, panels_end: usize, nr: usize) -> usize {
    panels_end * k * nr
}

/// Work a thread does on a block of whole output rows after the product: adding the
/// bias, an activation, a residual norm. Gets the index of the block's first row.
pub type Epilogue<'a> = &'a (dyn Fn(usize, &mut [f32]) + Sync);

/// How a linear layer's weight is held.
enum Stored {
    /// In the checkpoint's precision (f32, or bf16/f16 widened as read), f32 products.
    Float(Packed),
    /// int8 or bf16, multiplied by a low-precision kernel.
    Low(LowPacked),
}

/// The left operand of a product, in the form the layer's kernel reads.
enum Lhs<'a> {
    Float(&'a [f32]),
    Low(LowRows),
}

/// A linear layer `y = x · Wᵀ + b`, its weight packed for the kernel that will run it.
pub struct Linear {
    w: Stored,
    isa: Isa,
    /// Added by the caller's epilogue (so that it fuses with what follows); `None`
    /// for the bias-free layers of newer architectures.
    pub bias: Option<Vec<f32>>,
    pub k: usize,
    pub n: usize,
}

/// Row ranges of at most `per_task` rows covering `0..m`, such that the
/// first half of the list and the second hold equal rows (for two threads; `threads`
/// equal shares in general, each a multiple of `mr` but the last). Rayon hands the
/// halves of a list to the two threads, so neither waits for the other's last task:
/// 2,400 rows in plain 96-row tasks are 25 tasks, 13 for one thread and 12 for the
/// other, and the product took the time of 13.
fn row_tasks(m: usize, threads: usize, mr: usize, per_task: usize) -> Vec<Range<usize>> {
    let share = m.div_ceil(threads).next_multiple_of(mr);
    let mut tasks = Vec::new();
    let mut start = 0;
    while start < m {
        let end = (start + share).min(m);
        let pieces = (end - start).div_ceil(per_task);
        let rows = (end - start).div_ceil(pieces).next_multiple_of(mr);
        for s in (start..end).step_by(rows) {
            tasks.push(s..(s + rows).min(end));
        }
        start = end;
    }
    tasks
}

/// How a product's rows are shared among a pool's threads (see [`Linear::plan`]).
pub(crate) enum Plan {
    /// Row tasks in turn on the calling thread: there is one thread, or too little
    /// work to wake another.
    Serial(Vec<Range<usize>>),
    /// Row tasks split between the threads: enough rows for each to stream every
    /// weight panel past a block of its own.
    Rows(Vec<Range<usize>>),
    /// Few rows (a short query): the threads split the columns instead, so that
    /// each streams its share of the weights.
    Columns,
}

/// Below this many multiply-adds a product runs on one thread: waking the others
/// costs more than it saves.
const PARALLEL_MIN_WORK: usize = 1 << 18;

impl Linear {
    /// From PyTorch's `[out, in]` = `[n, k]` f32 weight.
    pub fn new(weight: &[f32], bias: Option<Vec<f32>>, n: usize, k: usize, isa: Isa) -> Self {
        Self::from_weight(Weight::F32(weight), bias, n, k, isa)
    }

    /// From a `[n, k]` weight in its checkpoint's storage, which is kept where `isa`
    /// has a kernel that reads it (bf16 everywhere; f16 on x86 with F16C), and
    /// widened to f32 otherwise.
    pub fn from_weight(
        weight: Weight<'_>,
        bias: Option<Vec<f32>>,
        n: usize,
        k: usize,
        isa: Isa,
    ) -> Self {
        let len = match weight {
            Weight::F32(w) => w.len(),
            Weight::Bf16(w) | Weight::F16(w) => w.len(),
        };
        assert_eq!(len, n * k);
        if let Some(b) = &bias {
            assert_eq!(b.len(), n);
        }
        let w = match weight {
            Weight::F16(w) if !isa.reads_f16() => {
                let wide: Vec<f32> = w
                    .iter()
                    .map(|h| half::f16::from_bits(*h).to_f32())
                    .collect();
                Packed::from_torch(Weight::F32(&wide), n, k, isa.nr())
            }
            other => Packed::from_torch(other, n, k, isa.nr()),
        };
        Linear {
            w: Stored::Float(w),
            isa,
            bias,
            k,
            n,
        }
    }

    /// From a `[n, k]` weight, quantized once for `kernel` (int8 per output
    /// channel, or bf16). `isa` still runs everything around the product.
    pub fn low(
        weight: Weight<'_>,
        bias: Option<Vec<f32>>,
        n: usize,
        k: usize,
        isa: Isa,
        kernel: LowKernel,
    ) -> Self {
        if let Some(b) = &bias {
            assert_eq!(b.len(), n);
        }
        Linear {
            w: Stored::Low(LowPacked::new(weight, n, k, kernel)),
            isa,
            bias,
            k,
            n,
        }
    }

    /// The precision the product runs in ("float32", "bfloat16", "float16" for
    /// weights widened as read; "int8" and "bf16" for the low-precision kernels).
    pub fn storage(&self) -> &'static str {
        match &self.w {
            Stored::Float(p) => match p.data {
                super::pack::Elements::F32(_) => "float32",
                super::pack::Elements::Bf16(_) => "bfloat16",
                super::pack::Elements::F16(_) => "float16",
            },
            Stored::Low(l) if l.kernel().is_int8() => "int8",
            Stored::Low(_) => "bf16",
        }
    }

    /// Panel width of the layer's kernel.
    fn nr(&self) -> usize {
        match &self.w {
            Stored::Float(p) => p.nr,
            Stored::Low(l) => l.kernel().nr(),
        }
    }

    /// Register-block rows of the layer's kernel.
    fn mr(&self) -> usize {
        match &self.w {
            Stored::Float(_) => self.isa.mr(),
            Stored::Low(l) => l.kernel().mr(),
        }
    }

    /// `m` rows of `x` as the kernel reads them: as they are for f32 products,
    /// quantized (or rounded to bf16) for the low-precision ones.
    fn prepare<'a>(&self, x: &'a [f32], m: usize) -> Lhs<'a> {
        match &self.w {
            Stored::Float(_) => Lhs::Float(x),
            Stored::Low(l) => Lhs::Low(l.prepare(x, m)),
        }
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    pub fn params(&self) -> usize {
        self.k * self.n + self.bias.as_ref().map_or(0, Vec::len)
    }

    /// Bytes held, padding of the last panel included.
    pub fn bytes(&self) -> usize {
        let w = match &self.w {
            Stored::Float(p) => p.data.bytes(),
            Stored::Low(l) => l.bytes(),
        };
        w + 4 * self.bias.as_ref().map_or(0, Vec::len)
    }

    /// `out = x · W` (or `out += x · W` when `accumulate`), then `epilogue` on each
    /// block of whole rows. `x` is `m × k`, `out` is `m × n`. The bias is not added
    /// here: the epilogue does it, fused with whatever follows. Runs on the current
    /// rayon pool.
    pub fn forward(
        &self,
        x: &[f32],
        m: usize,
        out: &mut [f32],
        accumulate: bool,
        epilogue: Epilogue<'_>,
    ) {
        let (k, n) = (self.k, self.n);
        assert_eq!(x.len(), m * k);
        assert_eq!(out.len(), m * n);
        if m == 0 {
            return;
        }
        let c = SharedMut(out.as_mut_ptr());
        let task = |rows: &Range<usize>| {
            // SAFETY: the tasks' row ranges do not overlap and lie inside `out`
            // (m × n), so this task's rows are its own.
            let c = unsafe {
                std::slice::from_raw_parts_mut(c.get().add(rows.start * n), rows.len() * n)
            };
            let x = &x[rows.start * k..rows.end * k];
            self.forward_task(x, rows.len(), c, accumulate, &|row0, c| {
                epilogue(rows.start + row0, c)
            });
        };
        match self.plan(m) {
            Plan::Serial(tasks) => tasks.iter().for_each(task),
            Plan::Rows(tasks) => tasks.par_iter().for_each(task),
            Plan::Columns => self.forward_columns(x, m, out, accumulate, epilogue),
        }
    }

    /// How [`Self::forward`] shares a product of `m` rows among the current pool's
    /// threads. Public to the engine so that a sublayer of two products (the MLP) can
    /// run both on the same row tasks.
    pub(crate) fn plan(&self, m: usize) -> Plan {
        let threads = rayon::current_num_threads();
        let (mr, per_task) = (self.mr(), self.isa.rows_per_task());
        if threads == 1 || m * self.n * self.k < PARALLEL_MIN_WORK {
            // One thread still goes through the rows in tasks, so that a task's
            // activations and output stay in L2 while every weight panel passes:
            // in one piece, a batch's output (2,400 rows × 1,536) went to memory
            // and back once per depth pass.
            Plan::Serial(row_tasks(m, 1, mr, per_task))
        } else if m >= threads * 48 {
            Plan::Rows(row_tasks(m, threads, mr, per_task))
        } else {
            Plan::Columns
        }
    }

    /// [`Self::forward`] of one row task's rows, on the calling thread: prepares the
    /// rows, runs all columns for them, then the epilogue, all while they are in
    /// cache. The caller keeps the rows few enough for that ([`Isa::rows_per_task`]).
    pub(crate) fn forward_task(
        &self,
        x: &[f32],
        m: usize,
        out: &mut [f32],
        accumulate: bool,
        epilogue: Epilogue<'_>,
    ) {
        assert_eq!(x.len(), m * self.k);
        assert_eq!(out.len(), m * self.n);
        let panels = self.n.div_ceil(self.nr());
        let a = self.prepare(x, m);
        // SAFETY: `a` and `out` are whole rows of the layer's input and output; `w`
        // was packed for this layer's kernels, which the CPU has.
        unsafe { self.product(&a, m, 0..panels, out.as_mut_ptr(), accumulate) };
        epilogue(0, out);
    }

    /// [`Self::forward`] of few rows: prepare them once, split the columns between
    /// the threads, then run the epilogue over rows.
    fn forward_columns(
        &self,
        x: &[f32],
        m: usize,
        out: &mut [f32],
        accumulate: bool,
        epilogue: Epilogue<'_>,
    ) {
        let threads = rayon::current_num_threads();
        let n = self.n;
        let nr = self.nr();
        let panels = n.div_ceil(nr);
        let c = SharedMut(out.as_mut_ptr());
        let a = self.prepare(x, m);
        let per_task = panels.div_ceil(threads);
        (0..panels.div_ceil(per_task))
            .into_par_iter()
            .for_each(|t| {
                let mine = t * per_task..((t + 1) * per_task).min(panels);
                // SAFETY: `out` is m × n; each task writes only its own panels' columns.
                unsafe {
                    let cp = c.get().add(mine.start * nr);
                    self.product(&a, m, mine, cp, accumulate)
                };
            });
        let rows = m.div_ceil(threads).max(1);
        out.par_chunks_mut(rows * n)
            .enumerate()
            .for_each(|(i, c)| epilogue(i * rows, c));
    }

    /// # Safety
    /// `a` must hold `m` rows (from [`Self::prepare`]); `out` (the first column of
    /// `panels`) `m` rows of stride `n` covering those panels, touched by no one else.
    unsafe fn product(
        &self,
        a: &Lhs<'_>,
        m: usize,
        panels: Range<usize>,
        out: *mut f32,
        accumulate: bool,
    ) {
        // SAFETY: forwarded from the caller; the kernels are the ones `w` was packed
        // for and were supported when the layer was built.
        unsafe {
            match (&self.w, a) {
                (Stored::Float(w), Lhs::Float(x)) => gemm(
                    self.isa,
                    x.as_ptr(),
                    self.k,
                    m,
                    w.view(),
                    panels,
                    0..self.k,
                    out,
                    self.n,
                    accumulate,
                ),
                (Stored::Low(w), Lhs::Low(rows)) => {
                    w.product(rows, m, panels, out, self.n, accumulate)
                }
                _ => unreachable!("operand prepared for another layer"),
            }
        }
    }
}

/// A raw pointer that parallel tasks may share because each writes a disjoint part.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub *mut f32);
// SAFETY: users guarantee disjoint writes (see each use).
unsafe impl Send for SharedMut {}
// SAFETY: as above.
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
    fn linear_matches_naive_on_every_kernel_and_split() {
        // Two threads split rows or columns; one runs the row tasks in turn.
        let pools = [1, 2].map(|t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        });
        // n = 70: a partial last panel for both panel widths; k = 400: two depth
        // passes (blocks of 256 or 384) wherever a product has more rows than
        // `whole_depth_rows` (m = 60 runs as a column split on AVX2, in blocks), one
        // pass where it has fewer (m = 1 and 13 on AVX2 and AVX-512).
        let (n, k) = (70, 400);
        let weight: Vec<f32> = (0..n * k)
            .map(|i| ((i * 31) % 17) as f32 * 0.1 - 0.8)
            .collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        for isa in Isa::available() {
            let lin = Linear::new(&weight, Some(bias.clone()), n, k, isa);
            // 1: single call; 13 and 60: column split; 200 and 1001: row split with a
            // remainder that is not a multiple of any MR.
            for (pool, m) in pools
                .iter()
                .flat_map(|p| [1, 13, 60, 200, 1001].map(|m| (p, m)))
            {
                let x: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 13) % 11) as f32 * 0.2 - 1.0)
                    .collect();
                let want = naive(&x, m, &weight, &bias, n, k);
                for accumulate in [false, true] {
                    let mut out = vec![if accumulate { 1.0 } else { f32::NAN }; m * n];
                    let seen = std::sync::Mutex::new(vec![0u8; m]);
                    pool.install(|| {
                        lin.forward(&x, m, &mut out, accumulate, &|row0, rows| {
                            let mut s = seen.lock().unwrap();
                            for r in row0..row0 + rows.len() / n {
                                s[r] += 1;
                            }
                            super::super::math::bias_add(rows, lin.bias.as_ref().unwrap())
                        })
                    });
                    assert!(
                        seen.into_inner().unwrap().iter().all(|c| *c == 1),
                        "{isa:?} m={m}, {} threads: every row once",
                        pool.current_num_threads()
                    );
                    let extra = if accumulate { 1.0 } else { 0.0 };
                    for (g, w) in out.iter().zip(&want) {
                        assert!(
                            (g - w - extra).abs() < 1e-3,
                            "{isa:?} m={m}, {} threads: {g} vs {}",
                            pool.current_num_threads(),
                            w + extra
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn half_precision_weights_give_the_products_of_their_f32_values() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (n, k, m) = (70, 300, 37);
        let wide: Vec<f32> = (0..n * k)
            .map(|i| ((i * 31) % 17) as f32 * 0.137 - 0.8)
            .collect();
        let bf: Vec<u16> = wide
            .iter()
            .map(|x| half::bf16::from_f32(*x).to_bits())
            .collect();
        let hf: Vec<u16> = wide
            .iter()
            .map(|x| half::f16::from_f32(*x).to_bits())
            .collect();
        let bf_wide: Vec<f32> = bf
            .iter()
            .map(|b| half::bf16::from_bits(*b).to_f32())
            .collect();
        let hf_wide: Vec<f32> = hf
            .iter()
            .map(|b| half::f16::from_bits(*b).to_f32())
            .collect();
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 13) % 11) as f32 * 0.2 - 1.0)
            .collect();
        for isa in Isa::available() {
            for (weight, as_f32, name) in [
                (Weight::Bf16(&bf), &bf_wide, "bf16"),
                (Weight::F16(&hf), &hf_wide, "f16"),
            ] {
                let half = Linear::from_weight(weight, None, n, k, isa);
                let full = Linear::new(as_f32, None, n, k, isa);
                let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
                pool.install(|| {
                    half.forward(&x, m, &mut a, false, &|_, _| {});
                    full.forward(&x, m, &mut b, false, &|_, _| {});
                });
                // Widening is exact and the order of the sums is the same: equal bits.
                assert_eq!(a, b, "{isa:?} {name}");
                let kept = half.bytes() < full.bytes();
                assert_eq!(
                    kept,
                    name == "bf16" || isa.reads_f16(),
                    "{isa:?} {name} storage"
                );
            }
        }
    }

    #[test]
    fn row_tasks_cover_the_rows_in_equal_halves() {
        for (m, threads, mr) in [
            (2400, 2, 6),
            (2401, 2, 6),
            (96, 2, 6),
            (1000, 3, 12),
            (7, 2, 6),
        ] {
            let tasks = row_tasks(m, threads, mr, 96);
            let mut next = 0;
            for t in &tasks {
                assert_eq!(t.start, next, "{m}: contiguous");
                assert!(!t.is_empty() && t.len() <= 96);
                next = t.end;
            }
            assert_eq!(next, m);
            let share = m.div_ceil(threads).next_multiple_of(mr);
            // Every thread's share starts a task.
            for t in 0..threads {
                if t * share < m {
                    assert!(tasks.iter().any(|r| r.start == t * share), "{m}: share {t}");
                }
            }
        }
        // The case that motivated it: 2,400 rows on two threads are 1,200 each.
        let tasks = row_tasks(2400, 2, 6, 96);
        let half = tasks.len() / 2;
        let rows = |ts: &[Range<usize>]| ts.iter().map(|r| r.len()).sum::<usize>();
        assert_eq!(rows(&tasks[..half]), 1200);
        assert_eq!(rows(&tasks[half..]), 1200);
    }

    #[test]
    fn gemm_on_panel_and_depth_ranges() {
        // B is 40 × 50 (k × n), packed plain; take panels 1.. and depth 7..33.
        let (k, n) = (40, 50);
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let m = 9;
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 5) % 9) as f32 * 0.5).collect();
        for isa in Isa::available() {
            let nr = isa.nr();
            let mut packed = vec![0f32; super::super::pack::packed_len(k, n, nr)];
            unsafe { super::super::pack::pack_plain(b.as_ptr(), n, k, n, nr, &mut packed) };
            let view = PackedRef {
                data: ElementsRef::F32(&packed),
                k,
                n,
                nr,
            };
            let panels = 1..n.div_ceil(nr);
            let cols = nr..n;
            let depth = 7..33;
            let ldc = cols.len() + 3;
            let mut c = vec![-1f32; m * ldc];
            unsafe {
                gemm(
                    isa,
                    a.as_ptr().add(depth.start),
                    k,
                    m,
                    view,
                    panels,
                    depth.clone(),
                    c.as_mut_ptr(),
                    ldc,
                    false,
                )
            };
            for i in 0..m {
                for (jj, j) in cols.clone().enumerate() {
                    let want: f32 = depth.clone().map(|t| a[i * k + t] * b[t * n + j]).sum();
                    assert!((c[i * ldc + jj] - want).abs() < 1e-3, "{isa:?} ({i},{j})");
                }
                // Past the last real column nothing is written.
                assert_eq!(c[i * ldc + cols.len()], -1.0);
            }
        }
    }
}
