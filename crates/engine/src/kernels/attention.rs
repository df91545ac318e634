//! Scaled dot-product attention for one head of one text, in blocks of query rows.
//!
//! With packed batches every text is its own small problem (`len × d` by `d × len`,
//! then `len × len` by `len × d`). We pack this head's keys and values once (a few KiB
//! for a short text) and run the same micro-kernels as the dense layers. Long texts
//! go through in blocks of query rows, so the scores held at once are
//! `block × keys`, never `len × len`: an 8,192-token text needs 4 MiB of scores per
//! thread rather than 256 MiB. Each block only computes the keys its rows may see, so
//! sliding-window layers cost `len × window`, and causal ones half. Softmax leaves its
//! division to the `len × d` output rather than the scores.

use std::ops::Range;

use super::gemm::gemm;
use super::pack::{pack_plain, pack_transposed_f32, packed_len, ElementsRef, PackedRef};
use super::softmax::{exp_rows, ROWS_TOGETHER};
use super::{scratch, Isa};

/// Which keys each query sees, relative to its own position `i`: keys `j` with
/// `i - left <= j <= i + right`, unbounded where `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub left: Option<usize>,
    pub right: Option<usize>,
}

impl Span {
    /// Every token sees every token of its text (encoders).
    pub const FULL: Span = Span {
        left: None,
        right: None,
    };
    /// Every token sees itself and the tokens before it (decoders).
    pub const CAUSAL: Span = Span {
        left: None,
        right: Some(0),
    };

    /// Tokens within `radius` positions either way (sliding-window encoder layers).
    pub const fn window(radius: usize) -> Span {
        Span {
            left: Some(radius),
            right: Some(radius),
        }
    }

    /// The keys query `i` of a `len`-token text sees.
    pub fn keys(self, i: usize, len: usize) -> Range<usize> {
        let lo = self.left.map_or(0, |l| i.saturating_sub(l));
        let hi = self.right.map_or(len, |r| (i + r + 1).min(len));
        lo..hi
    }
}

/// Adds a bias to scores before the softmax (MPNet's relative positions, ALiBi):
/// called with a query row `i`, the keys `keys`, and that row's scores for them.
pub type ScoreBias<'a> = &'a (dyn Fn(usize, Range<usize>, &mut [f32]) + Sync);

/// Query rows per block for long texts: `ROWS × len` scores stay in L2 for texts of
/// a few thousand tokens, and memory stays bounded for any length.
const ROWS: usize = 128;
/// Texts up to this long run as one block: one pass is fastest while the scores
/// (`len²` floats, 1 MiB at 512) stay in L2.
const ONE_BLOCK: usize = 512;

/// Scratch reused across calls on a thread.
#[derive(Default)]
pub struct Scratch {
    scores: Vec<f32>,
    sums: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

/// One head of one text: where its queries, keys and values are, and where the
/// output goes.
pub struct Head {
    pub q: *const f32,
    pub k: *const f32,
    pub v: *const f32,
    /// Row stride of `q`, `k` and `v` (the fused QKV matrix's width).
    pub ld: usize,
    pub out: *mut f32,
    /// Row stride of `out`.
    pub ldo: usize,
    pub len: usize,
    pub d: usize,
}

/// `out = softmax(scale · q kᵀ + bias, over the keys each query sees) v` for one head.
///
/// # Safety
/// `isa` must be supported by the CPU. `head.q`, `head.k` and `head.v` must be valid
/// for `len` rows of `d` floats at stride `ld`, and `head.out` for `len` rows of `d`
/// floats at stride `ldo`, written by no one else during the call.
pub unsafe fn attend(
    isa: Isa,
    head: &Head,
    scale: f32,
    span: Span,
    bias: Option<ScoreBias<'_>>,
    s: &mut Scratch,
) {
    let Head { len, d, ld, .. } = *head;
    if len == 0 {
        return;
    }
    let nr = isa.nr();
    // Keys as the right-hand side of q·kᵀ (`d × len`), values of p·v (`len × d`).
    let kp = scratch(&mut s.k, packed_len(d, len, nr));
    let vp = scratch(&mut s.v, packed_len(len, d, nr));
    // SAFETY: k and v hold len rows of d floats at stride ld (caller's promise).
    unsafe {
        pack_transposed_f32(isa, head.k, ld, len, d, nr, kp);
        pack_plain(head.v, ld, len, d, nr, vp);
    }
    let keys = PackedRef {
        data: ElementsRef::F32(kp),
        k: d,
        n: len,
        nr,
    };
    let values = PackedRef {
        data: ElementsRef::F32(vp),
        k: len,
        n: d,
        nr,
    };
    let block = if len <= ONE_BLOCK { len } else { ROWS };
    let mut r0 = 0;
    while r0 < len {
        let r1 = (r0 + block).min(len);
        let rows = r1 - r0;
        // Keys any row of the block sees, widened to whole panels.
        let lo = span.keys(r0, len).start;
        let hi = span.keys(r1 - 1, len).end;
        let (p0, p1) = (lo / nr, hi.div_ceil(nr));
        let c0 = p0 * nr;
        let width = (p1 - p0) * nr;
        let scores = scratch(&mut s.scores, rows * width);
        // SAFETY: q holds rows r0..r1; `scores` is rows × width, covering panels p0..p1.
        unsafe {
            gemm(
                isa,
                head.q.add(r0 * ld),
                ld,
                rows,
                keys,
                p0..p1,
                0..d,
                scores.as_mut_ptr(),
                width,
                false,
            )
        };
        // Row r's keys, as columns of `scores`.
        let cols_of = |r: usize| {
            let seen = span.keys(r0 + r, len);
            seen.start - c0..seen.end - c0
        };
        let sums = scratch(&mut s.sums, rows);
        match bias {
            None => exp_rows(isa, scores, width, &cols_of, scale, sums),
            // The bias is added to scaled scores, so scale first; in groups, so that
            // the rows just biased are still in L1 when their exponentials run.
            Some(add) => {
                for (g, (group, sums)) in scores
                    .chunks_mut(ROWS_TOGETHER * width)
                    .zip(sums.chunks_mut(ROWS_TOGETHER))
                    .enumerate()
                {
                    let first = g * ROWS_TOGETHER;
                    for (r, row) in (first..).zip(group.chunks_exact_mut(width)) {
                        let cols = cols_of(r);
                        for x in &mut row[cols.clone()] {
                            *x *= scale;
                        }
                        add(r0 + r, span.keys(r0 + r, len), &mut row[cols]);
                    }
                    exp_rows(isa, group, width, &|r| cols_of(first + r), 1.0, sums);
                }
            }
        }
        // Keys past the text (the last panel's padding) have zero weight: stop the
        // depth at `len`.
        let depth = c0..(c0 + width).min(len);
        // SAFETY: `scores` holds rows of `width` ≥ depth.len() floats; out holds rows
        // r0..r1 of d floats at stride ldo.
        unsafe {
            let out = head.out.add(r0 * head.ldo);
            gemm(
                isa,
                scores.as_ptr(),
                width,
                rows,
                values,
                0..d.div_ceil(nr),
                depth,
                out,
                head.ldo,
                false,
            );
            for (r, sum) in sums.iter().enumerate() {
                let row = std::slice::from_raw_parts_mut(out.add(r * head.ldo), d);
                let inv = 1.0 / sum;
                for x in row {
                    *x *= inv;
                }
            }
        }
        r0 = r1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention in f64 the obvious way.
    fn naive(
        data: &[f32],
        ld: usize,
        len: usize,
        d: usize,
        scale: f32,
        span: Span,
        biased: bool,
    ) -> Vec<f64> {
        let at = |row: usize, col: usize| data[row * ld + col] as f64;
        let (q, k, v) = (0, d, 2 * d);
        let mut out = vec![0f64; len * d];
        for i in 0..len {
            let seen = span.keys(i, len);
            let logits: Vec<f64> = seen
                .clone()
                .map(|j| {
                    let dot: f64 = (0..d).map(|t| at(i, q + t) * at(j, k + t)).sum();
                    dot * scale as f64 + if biased { test_bias(i, j) as f64 } else { 0.0 }
                })
                .collect();
            let m = logits.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = logits.iter().map(|x| (x - m).exp()).collect();
            let total: f64 = e.iter().sum();
            for t in 0..d {
                out[i * d + t] = seen
                    .clone()
                    .zip(&e)
                    .map(|(j, w)| w / total * at(j, v + t))
                    .sum();
            }
        }
        out
    }

    fn test_bias(i: usize, j: usize) -> f32 {
        ((i * 3 + j) % 5) as f32 * 0.1
    }

    #[test]
    fn matches_naive_attention_for_every_span_kernel_and_length() {
        let spans = [Span::FULL, Span::CAUSAL, Span::window(3), Span::window(40)];
        // 600 and 700: several query blocks, and a last block that is not full.
        for (len, d) in [(1, 32), (5, 32), (45, 64), (70, 16), (600, 32), (700, 8)] {
            let ld = 3 * d + 7;
            let data: Vec<f32> = (0..len * ld)
                .map(|i| ((i * 37) % 23) as f32 * 0.05 - 0.5)
                .collect();
            for isa in Isa::available() {
                for span in spans {
                    for biased in [false, true] {
                        let mut out = vec![f32::NAN; len * d];
                        let bias = |i: usize, keys: Range<usize>, row: &mut [f32]| {
                            for (j, x) in keys.zip(row) {
                                *x += test_bias(i, j);
                            }
                        };
                        let head = Head {
                            q: data.as_ptr(),
                            k: data[d..].as_ptr(),
                            v: data[2 * d..].as_ptr(),
                            ld,
                            out: out.as_mut_ptr(),
                            ldo: d,
                            len,
                            d,
                        };
                        unsafe {
                            attend(
                                isa,
                                &head,
                                0.3,
                                span,
                                biased.then_some(&bias as ScoreBias),
                                &mut Scratch::default(),
                            )
                        };
                        let want = naive(&data, ld, len, d, 0.3, span, biased);
                        for (n, (g, w)) in out.iter().zip(&want).enumerate() {
                            assert!(
                                (*g as f64 - w).abs() < 1e-5,
                                "{isa:?} {span:?} bias {biased} len {len} d {d} [{}]: {g} vs {w}",
                                n / d
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn spans() {
        assert_eq!(Span::FULL.keys(3, 10), 0..10);
        assert_eq!(Span::CAUSAL.keys(3, 10), 0..4);
        assert_eq!(Span::window(2).keys(3, 10), 1..6);
        assert_eq!(Span::window(2).keys(0, 10), 0..3);
        assert_eq!(Span::window(2).keys(9, 10), 7..10);
    }
}
