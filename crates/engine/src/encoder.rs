//! The transformer encoder shared by BERT-like architectures, over packed batches.
//!
//! A batch is one matrix of all its texts' tokens end to end, with no padding: the
//! dense layers (90% of the work) see `tokens × hidden`, so a batch costs the sum of
//! its texts, not `texts × longest`. Only attention needs sequence boundaries; it runs
//! per (text, head) in parallel, reading query, key and value in place from the fused
//! QKV output. Each text's result is the same as if it ran alone.

use std::ops::Range;

use rayon::prelude::*;

use crate::kernels::gemm::{Linear, SharedMut};
use crate::kernels::{attention, math, norm, scratch};

/// Something added to attention scores before the softmax (MPNet's relative position
/// bias); `scores` is the `len × len` matrix of one head of one text.
pub trait AttentionBias: Sync {
    fn add(&self, head: usize, len: usize, scores: &mut [f32]);
}

pub struct LayerNorm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// Token, position and (optionally) segment embeddings, summed and normalized.
pub struct Embeddings {
    pub word: Vec<f32>,
    pub position: Vec<f32>,
    /// Row 0 of the token-type table: every text is a single segment.
    pub token_type: Option<Vec<f32>>,
    /// First position id: 0 for BERT; `padding_idx + 1` for RoBERTa and MPNet.
    pub position_offset: usize,
    pub max_positions: usize,
    pub norm: LayerNorm,
    pub vocab: usize,
}

pub struct Layer {
    pub qkv: Linear,
    pub attn_out: Linear,
    pub attn_norm: LayerNorm,
    pub ff_in: Linear,
    pub ff_out: Linear,
    pub ff_norm: LayerNorm,
}

pub struct Encoder {
    pub embeddings: Embeddings,
    pub layers: Vec<Layer>,
    pub hidden: usize,
    pub heads: usize,
    pub eps: f32,
}

/// Buffers reused across batches: allocating them per call costs page faults that
/// show up as ~10% of the time in profiles of engines that do.
#[derive(Default)]
pub struct Workspace {
    pub hidden: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    inter: Vec<f32>,
}

impl Encoder {
    /// The largest number of tokens one text may have.
    pub fn max_tokens(&self) -> usize {
        self.embeddings.max_positions - self.embeddings.position_offset
    }

    pub fn params(&self) -> usize {
        let e = &self.embeddings;
        let emb = e.word.len()
            + e.position.len()
            + e.token_type.as_ref().map_or(0, Vec::len)
            + 2 * e.norm.gamma.len();
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                l.qkv.params()
                    + l.attn_out.params()
                    + l.ff_in.params()
                    + l.ff_out.params()
                    + 4 * self.hidden
            })
            .sum();
        emb + layers
    }

    /// Runs the encoder on `ids` (all texts end to end; `seqs` gives each text's
    /// range) and leaves the last hidden states, `tokens × hidden`, in `ws.hidden`.
    /// Must run inside the engine's thread pool.
    pub fn forward(
        &self,
        ids: &[u32],
        seqs: &[Range<usize>],
        bias: Option<&dyn AttentionBias>,
        ws: &mut Workspace,
    ) {
        let t = ids.len();
        let h = self.hidden;
        self.embed(ids, seqs, scratch(&mut ws.hidden, t * h));
        for layer in &self.layers {
            let hidden = &mut ws.hidden[..t * h];
            let qkv = scratch(&mut ws.qkv, t * 3 * h);
            layer.qkv.forward(hidden, t, qkv, false, &|rows| {
                math::bias_add(rows, &layer.qkv.bias)
            });
            let ctx = scratch(&mut ws.ctx, t * h);
            self.attention(qkv, seqs, bias, ctx);
            // hidden += ctx · Wo, then LayerNorm(hidden + bo): residual, bias and norm
            // fused into the GEMM's accumulate and its epilogue.
            layer.attn_out.forward(ctx, t, hidden, true, &|rows| {
                self.post_norm(rows, &layer.attn_out, &layer.attn_norm)
            });
            let inter = scratch(&mut ws.inter, t * layer.ff_in.n);
            layer.ff_in.forward(hidden, t, inter, false, &|rows| {
                math::bias_gelu(rows, &layer.ff_in.bias)
            });
            layer.ff_out.forward(inter, t, hidden, true, &|rows| {
                self.post_norm(rows, &layer.ff_out, &layer.ff_norm)
            });
        }
    }

    /// `LayerNorm(rows + bias)`, where `rows` already hold residual + product.
    fn post_norm(&self, rows: &mut [f32], lin: &Linear, ln: &LayerNorm) {
        norm::bias_layer_norm(rows, &lin.bias, &ln.gamma, &ln.beta, self.eps)
    }

    fn embed(&self, ids: &[u32], seqs: &[Range<usize>], out: &mut [f32]) {
        let e = &self.embeddings;
        let h = self.hidden;
        let out_ptr = SharedMut(out.as_mut_ptr());
        seqs.par_iter().for_each(|seq| {
            // SAFETY: sequences are disjoint ranges of tokens, so each task writes its
            // own rows of `out`.
            let rows = unsafe {
                std::slice::from_raw_parts_mut(out_ptr.get().add(seq.start * h), seq.len() * h)
            };
            for (pos, (row, &id)) in rows.chunks_exact_mut(h).zip(&ids[seq.clone()]).enumerate() {
                let id = id as usize;
                let word = &e.word[id * h..(id + 1) * h];
                let p = pos + e.position_offset;
                let position = &e.position[p * h..(p + 1) * h];
                for i in 0..h {
                    row[i] = word[i] + position[i];
                }
                if let Some(tt) = &e.token_type {
                    for i in 0..h {
                        row[i] += tt[i];
                    }
                }
            }
            let zeros = vec![0f32; h];
            norm::bias_layer_norm(rows, &zeros, &e.norm.gamma, &e.norm.beta, self.eps);
        });
    }

    /// Scaled dot-product attention per text and head; writes `tokens × hidden`.
    fn attention(
        &self,
        qkv: &[f32],
        seqs: &[Range<usize>],
        bias: Option<&dyn AttentionBias>,
        ctx: &mut [f32],
    ) {
        let h = self.hidden;
        let d = h / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        let ld = 3 * h;
        let ctx_ptr = SharedMut(ctx.as_mut_ptr());
        let mut tasks: Vec<(usize, usize)> = (0..seqs.len())
            .flat_map(|s| (0..self.heads).map(move |hd| (s, hd)))
            .collect();
        // Longest first, so that the last tasks to start are the short ones.
        tasks.sort_by_key(|&(s, _)| std::cmp::Reverse(seqs[s].len()));
        tasks.par_iter().for_each(|&(s, head)| {
            let seq = &seqs[s];
            SCRATCH.with(|cell| {
                let scratch = &mut cell.borrow_mut();
                let add_bias =
                    bias.map(|b| move |scores: &mut [f32]| b.add(head, seq.len(), scores));
                // SAFETY: reads lie inside `qkv` (this text's rows; this head's columns
                // of the Q, K and V thirds); the output is this text's rows and this
                // head's columns of `ctx`, which no other task writes.
                unsafe {
                    let q = qkv.as_ptr().add(seq.start * ld + head * d);
                    attention::attend(
                        q,
                        q.add(h),
                        q.add(2 * h),
                        ld,
                        seq.len(),
                        d,
                        scale,
                        add_bias.as_ref().map(|f| f as &dyn Fn(&mut [f32])),
                        ctx_ptr.get().add(seq.start * h + head * d),
                        h,
                        scratch,
                    );
                }
            });
        });
    }
}

thread_local! {
    /// Per-thread attention scratch, reused across heads and batches.
    static SCRATCH: std::cell::RefCell<attention::Scratch> = std::cell::RefCell::new(attention::Scratch::default());
}
