//! The feed-forward part of a layer: plain (`down(act(up(x)))`) or gated
//! (`down(act(gate(x)) · up(x))`: GeGLU, SwiGLU).
//!
//! A gated MLP's two input projections run as one product whose output rows are
//! `[activated half | linear half]`; each architecture stacks its checkpoint's
//! tensors in that order at load (ModernBERT's `Wi` is already `[input | gate]`, GTE
//! stores `[up | gate]`, Qwen3 keeps them apart), so the forward pass is the same for
//! all of them. The activation runs in the product's epilogue, while the rows are in
//! cache.

use std::cell::Cell;
use std::ops::Range;

use rayon::prelude::*;

use super::Size;
use crate::kernels::gemm::{Epilogue, Linear, Plan, SharedMut};
use crate::kernels::math::{self, Activation};
use crate::kernels::scratch;

pub enum Mlp {
    Plain {
        up: Linear,
        down: Linear,
        act: Activation,
    },
    Gated {
        /// `2 · intermediate` outputs: the activated half first.
        up: Linear,
        down: Linear,
        act: Activation,
    },
}

thread_local! {
    /// A row task's intermediate (the up projection's output, and a gated MLP's
    /// product of its two halves), kept per thread from task to task so that it
    /// stays in L2: fresh rows of a batch-sized buffer would be fetched from memory
    /// before each write.
    static TASK_SCRATCH: Cell<(Vec<f32>, Vec<f32>)> = const { Cell::new((Vec::new(), Vec::new())) };
}

/// Where [`Mlp::forward`] reads its input.
pub enum Input<'a> {
    /// The buffer it writes (post-norm: the residual stream it adds to).
    Output,
    Rows(&'a [f32]),
}

/// Whether a product splits across the pool's threads or runs on the calling one
/// (inside a row task that already has its thread).
#[derive(Clone, Copy)]
enum Run {
    Split,
    Here,
}

impl Mlp {
    pub fn down(&self) -> &Linear {
        match self {
            Mlp::Plain { down, .. } | Mlp::Gated { down, .. } => down,
        }
    }

    pub fn intermediate(&self) -> usize {
        self.down().k
    }

    /// `dst (+)= down(inner(x))` for `t` rows, then `epilogue` on blocks of whole
    /// rows of `dst` (as [`Linear::forward`]'s; the down projection's bias is left to
    /// it, so that it fuses with the residual).
    ///
    /// Where the rows run as row tasks (a batch, or any rows on one thread), each
    /// task runs both products, its block of the intermediate (96 rows × 1,536 for
    /// MiniLM, 590 KB) in a buffer its thread reuses, so the block goes from the up
    /// projection to the down one in L2. As two whole products, a 32-text batch's
    /// intermediate (2,400 × 1,536, 15 MB) went out to L3 and back between them.
    /// Measured on an Intel Xeon with AMX (KVM guest, 2 threads, MiniLM, 1,000
    /// workload texts, sorted, 3 alternating runs, medians): int8 batch 32 16,954 ->
    /// 19,601 tokens/s, batch 8 19,560 -> 21,086; f32 batch 32 9,187 -> 9,911, batch
    /// 8 9,430 -> 9,783. Few rows (a query) still run as two products, each
    /// planned on its own (split by columns where it has the work for it).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        input: Input<'_>,
        t: usize,
        dst: &mut [f32],
        accumulate: bool,
        epilogue: Epilogue<'_>,
        up_buf: &mut Vec<f32>,
        gated_buf: &mut Vec<f32>,
    ) {
        let (up, down) = self.layers();
        let h = up.k;
        assert_eq!(dst.len(), t * down.n);
        if matches!(input, Input::Output) {
            assert_eq!(h, down.n, "an MLP reading its output keeps the width");
        }
        let (tasks, split) = match up.plan(t) {
            Plan::Columns => {
                let inner = match input {
                    Input::Output => self.inner(dst, t, up_buf, gated_buf, Run::Split),
                    Input::Rows(x) => self.inner(x, t, up_buf, gated_buf, Run::Split),
                };
                down.forward(inner, t, dst, accumulate, epilogue);
                return;
            }
            Plan::Serial(tasks) => (tasks, false),
            Plan::Rows(tasks) => (tasks, true),
        };
        // One pointer for both roles where the input is the output: a second
        // `as_mut_ptr` would be a new borrow that invalidates the first.
        let out = SharedMut(dst.as_mut_ptr());
        let x = match input {
            Input::Output => out,
            Input::Rows(x) => {
                assert_eq!(x.len(), t * h);
                SharedMut(x.as_ptr() as *mut f32)
            }
        };
        let task = |rows: &Range<usize>| {
            let n = rows.len();
            // Taken, not borrowed: should a task ever run inside another on the same
            // thread, it gets buffers of its own instead of a panic.
            let (mut wide_buf, mut gated_buf) = TASK_SCRATCH.take();
            // SAFETY: the tasks' row ranges are disjoint and inside the t rows that
            // `x` and `dst` hold (t × h, t × down.n), so each task reads and writes
            // only its own rows. Where `x` is `dst` (Input::Output), this task's rows
            // of it are read (by the up projection) before the down projection
            // writes them, and the shared view ends before the mutable one is made.
            unsafe {
                let inner = {
                    let x = std::slice::from_raw_parts(x.get().add(rows.start * h), n * h);
                    self.inner(x, n, &mut wide_buf, &mut gated_buf, Run::Here)
                };
                let out =
                    std::slice::from_raw_parts_mut(out.get().add(rows.start * down.n), n * down.n);
                down.forward_task(inner, n, out, accumulate, &|row0, c| {
                    epilogue(rows.start + row0, c)
                });
            }
            TASK_SCRATCH.set((wide_buf, gated_buf));
        };
        if split {
            tasks.par_iter().for_each(task);
        } else {
            tasks.iter().for_each(task);
        }
    }

    fn layers(&self) -> (&Linear, &Linear) {
        match self {
            Mlp::Plain { up, down, .. } | Mlp::Gated { up, down, .. } => (up, down),
        }
    }

    /// The input of the down projection for `x` (`t × hidden`): `t × intermediate`,
    /// in `up_buf` (plain) or `gated_buf` (gated), the products run as `run` says.
    fn inner<'a>(
        &self,
        x: &[f32],
        t: usize,
        up_buf: &'a mut Vec<f32>,
        gated_buf: &'a mut Vec<f32>,
        run: Run,
    ) -> &'a [f32] {
        let (up, _) = self.layers();
        let wide = scratch(up_buf, t * up.n);
        let gated = match self {
            Mlp::Plain { .. } => &mut [][..],
            Mlp::Gated { .. } => scratch(gated_buf, t * self.intermediate()),
        };
        let forward = |l: &Linear, out: &mut [f32], epilogue: Epilogue<'_>| match run {
            Run::Split => l.forward(x, t, out, false, epilogue),
            Run::Here => l.forward_task(x, t, out, false, epilogue),
        };
        match self {
            Mlp::Plain { up, act, .. } => {
                forward(up, wide, &|_, rows| {
                    math::bias_act(rows, up.bias.as_deref(), up.n, *act)
                });
                wide
            }
            Mlp::Gated { up, act, .. } => {
                let i = up.n / 2;
                let dst = SharedMut(gated.as_mut_ptr());
                forward(up, wide, &|row0, rows| {
                    let n = rows.len() / up.n;
                    // SAFETY: the epilogue of rows row0..row0+n writes only those rows
                    // of `gated`, which holds t rows of i; no other task has them.
                    let dst =
                        unsafe { std::slice::from_raw_parts_mut(dst.get().add(row0 * i), n * i) };
                    math::gated(rows, up.bias.as_deref(), i, *act, dst);
                });
                gated
            }
        }
    }

    pub fn size(&self) -> Size {
        let lin = |l: &Linear| Size {
            params: l.params(),
            bytes: l.bytes(),
        };
        match self {
            Mlp::Plain { up, down, .. } | Mlp::Gated { up, down, .. } => lin(up) + lin(down),
        }
    }

    pub fn flops(&self, len: usize) -> f64 {
        let (up, down) = self.layers();
        2.0 * len as f64 * (up.k * up.n + down.k * down.n) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::pack::Weight;
    use crate::kernels::quant::LowKernel;
    use crate::kernels::Isa;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + seed * 104_729) % 211) as f32 / 211.0 - 0.5)
            .collect()
    }

    /// `dst + down(act(up(x)))` row by row in f64, then the test's epilogue (which
    /// adds each row's index, so that a task handing it the wrong first row shows).
    fn reference(
        x: &[f32],
        dst: &[f32],
        t: usize,
        (w_up, b_up): (&[f32], &[f32]),
        w_down: &[f32],
        (h, i): (usize, usize),
        gated: bool,
    ) -> Vec<f32> {
        let relu = |v: f64| v.max(0.0);
        let mut out = dst.to_vec();
        for r in 0..t {
            let up: Vec<f64> = (0..b_up.len())
                .map(|j| {
                    let dot: f64 = (0..h)
                        .map(|c| x[r * h + c] as f64 * w_up[j * h + c] as f64)
                        .sum();
                    dot + b_up[j] as f64
                })
                .collect();
            let inner: Vec<f64> = (0..i)
                .map(|j| {
                    if gated {
                        relu(up[j]) * up[i + j]
                    } else {
                        relu(up[j])
                    }
                })
                .collect();
            for j in 0..h {
                let dot: f64 = (0..i).map(|c| inner[c] * w_down[j * i + c] as f64).sum();
                out[r * h + j] = (out[r * h + j] as f64 + dot + r as f64) as f32;
            }
        }
        out
    }

    #[test]
    fn row_tasks_column_split_and_one_thread_agree_with_the_reference() {
        let (h, i) = (64, 256);
        let pools = [1, 2].map(|n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        });
        let epilogue = |row0: usize, rows: &mut [f32]| {
            for (r, row) in rows.chunks_mut(h).enumerate() {
                row.iter_mut().for_each(|v| *v += (row0 + r) as f32);
            }
        };
        // f32 on every instruction set, then the low-precision kernels (whose rows
        // are prepared per task: quantized per row, so any split gives the same
        // codes), within their rounding.
        let kernels = Isa::available()
            .into_iter()
            .map(|isa| (isa, None, 1e-4))
            .chain(
                LowKernel::available()
                    .into_iter()
                    .map(|k| (k.isa(), Some(k), 3e-2)),
            );
        for (isa, low, tolerance) in kernels {
            for gated in [false, true] {
                let wide = if gated { 2 * i } else { i };
                let (w_up, b_up, w_down) = (values(wide * h, 1), values(wide, 2), values(h * i, 3));
                let layer = |w: &[f32], bias: Option<Vec<f32>>, n: usize, k: usize| match low {
                    None => Linear::new(w, bias, n, k, isa),
                    Some(kernel) => Linear::low(Weight::F32(w), bias, n, k, isa, kernel),
                };
                let up = layer(&w_up, Some(b_up.clone()), wide, h);
                let down = layer(&w_down, None, h, i);
                let act = Activation::Relu;
                let mlp = if gated {
                    Mlp::Gated { up, down, act }
                } else {
                    Mlp::Plain { up, down, act }
                };
                // With two threads: 3 rows are too little work to split (one row
                // task), 40 split the columns, 200 run as row tasks (both products
                // in each); one thread runs row tasks in turn.
                for (pool, t) in pools.iter().flat_map(|p| [3, 40, 200].map(|t| (p, t))) {
                    let x = values(t * h, 4);
                    let start = values(t * h, 5);
                    let want = reference(&x, &start, t, (&w_up, &b_up), &w_down, (h, i), gated);
                    let same = reference(&start, &start, t, (&w_up, &b_up), &w_down, (h, i), gated);
                    let (mut up_buf, mut gated_buf) = (Vec::new(), Vec::new());
                    let mut dst = start.clone();
                    pool.install(|| {
                        mlp.forward(
                            Input::Rows(&x),
                            t,
                            &mut dst,
                            true,
                            &epilogue,
                            &mut up_buf,
                            &mut gated_buf,
                        )
                    });
                    let mut own = start.clone();
                    pool.install(|| {
                        mlp.forward(
                            Input::Output,
                            t,
                            &mut own,
                            true,
                            &epilogue,
                            &mut up_buf,
                            &mut gated_buf,
                        )
                    });
                    let threads = pool.current_num_threads();
                    for (got, want, input) in [(&dst, &want, "rows"), (&own, &same, "output")] {
                        // Against the size of the MLP's own contribution (the output
                        // less the start and the epilogue's row index).
                        let scale = (0..t * h)
                            .map(|e| (want[e] - start[e] - (e / h) as f32).abs())
                            .fold(0f32, f32::max);
                        let worst = got
                            .iter()
                            .zip(want)
                            .map(|(g, w)| (g - w).abs())
                            .fold(0f32, f32::max)
                            / scale;
                        let kernel = low.map_or("f32", |k| k.name());
                        assert!(
                            worst < tolerance,
                            "{isa:?} {kernel} gated={gated} t={t} threads={threads} input={input}: off by {worst} of {scale}"
                        );
                    }
                }
            }
        }
    }
}
