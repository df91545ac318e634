//! One transformer layer: attention then MLP, each with a residual connection and
//! norms placed where the architecture puts them.
//!
//! Where the norm sits decides what can be fused into the products' epilogues:
//! - post-norm (BERT): the out projection accumulates straight into the residual
//!   stream and its epilogue adds the bias and normalizes in the same pass;
//! - pre-norm (ModernBERT, Qwen3): the stream is only added to, and the epilogue that
//!   adds writes the next sublayer's normalized input at the same time;
//! - sandwich (Gemma3): the sublayer's output is normalized before it is added, then
//!   the next input is normalized, all in the epilogue of the product that made it.

use super::attention::SelfAttention;
use super::mlp::{Input, Mlp};
use super::norm::Norm;
use super::{Batch, Size, Workspace};
use crate::kernels::gemm::SharedMut;
use crate::kernels::{math, scratch};

/// Where a layer's norms are.
pub enum Norms {
    /// `h = norm₁(h + attn(h)); h = norm₂(h + mlp(h))`.
    Post { attn: Norm, mlp: Norm },
    /// `h = h + attn(norm₁(h)); h = h + mlp(norm₂(h))`; `norm₁` may be absent
    /// (ModernBERT's first layer, whose embeddings are already normalized).
    Pre { attn: Option<Norm>, mlp: Norm },
    /// `h = h + post₁(attn(pre₁(h))); h = h + post₂(mlp(pre₂(h)))`.
    Sandwich {
        pre_attn: Norm,
        post_attn: Norm,
        pre_mlp: Norm,
        post_mlp: Norm,
    },
}

pub struct Block {
    pub attn: SelfAttention,
    pub mlp: Mlp,
    pub norms: Norms,
}

/// `rows` rows of `width` floats of a buffer that parallel epilogues share, starting
/// at row `row0`.
///
/// # Safety
/// The rows must lie inside the buffer `p` points into, and no one else may touch
/// them while the slice lives.
unsafe fn rows_of<'a>(p: SharedMut, row0: usize, rows: usize, width: usize) -> &'a mut [f32] {
    // SAFETY: the caller's promise.
    unsafe { std::slice::from_raw_parts_mut(p.get().add(row0 * width), rows * width) }
}

impl Block {
    /// Runs the layer on the residual stream in `ws.hidden`.
    pub fn forward(&self, batch: &Batch<'_>, ws: &mut Workspace) {
        let t = batch.tokens();
        let out = &self.attn.out;
        let h = out.n;
        let cw = self.attn.context_width();
        let down = self.mlp.down();
        let Workspace {
            hidden,
            normed,
            qkv,
            ctx,
            up,
            gated,
            out: tmp,
        } = ws;
        let hs = &mut hidden[..t * h];
        match &self.norms {
            Norms::Post { attn, mlp } => {
                self.attn.context(hs, batch, qkv, ctx);
                out.forward(&ctx[..t * cw], t, hs, true, &|_, rows| {
                    attn.apply(rows, out.bias.as_deref())
                });
                let epilogue = |_: usize, rows: &mut [f32]| mlp.apply(rows, down.bias.as_deref());
                self.mlp
                    .forward(Input::Output, t, hs, true, &epilogue, up, gated);
            }
            Norms::Pre { attn, mlp } => {
                let normed = scratch(normed, t * h);
                match attn {
                    Some(norm) => {
                        norm.apply_to(hs, normed);
                        self.attn.context(normed, batch, qkv, ctx);
                    }
                    None => self.attn.context(hs, batch, qkv, ctx),
                }
                let next = SharedMut(normed.as_mut_ptr());
                out.forward(&ctx[..t * cw], t, hs, true, &|row0, rows| {
                    if let Some(b) = &out.bias {
                        math::bias_add(rows, b);
                    }
                    // SAFETY: this epilogue's rows of `normed` (t × h), no one else's.
                    mlp.apply_to(rows, unsafe { rows_of(next, row0, rows.len() / h, h) });
                });
                let epilogue = |_: usize, rows: &mut [f32]| {
                    if let Some(b) = &down.bias {
                        math::bias_add(rows, b);
                    }
                };
                self.mlp
                    .forward(Input::Rows(normed), t, hs, true, &epilogue, up, gated);
            }
            Norms::Sandwich {
                pre_attn,
                post_attn,
                pre_mlp,
                post_mlp,
            } => {
                let normed = scratch(normed, t * h);
                pre_attn.apply_to(hs, normed);
                self.attn.context(normed, batch, qkv, ctx);
                let stream = SharedMut(hs.as_mut_ptr());
                let next = SharedMut(normed.as_mut_ptr());
                let tmp = scratch(tmp, t * h);
                out.forward(&ctx[..t * cw], t, tmp, false, &|row0, rows| {
                    post_attn.apply(rows, out.bias.as_deref());
                    let n = rows.len() / h;
                    // SAFETY: this epilogue's rows of the stream and of `normed`
                    // (both t × h); no other task touches them.
                    let (s, x) =
                        unsafe { (rows_of(stream, row0, n, h), rows_of(next, row0, n, h)) };
                    add(s, rows);
                    pre_mlp.apply_to(s, x);
                });
                let epilogue = |row0: usize, rows: &mut [f32]| {
                    post_mlp.apply(rows, down.bias.as_deref());
                    // SAFETY: as above.
                    add(unsafe { rows_of(stream, row0, rows.len() / h, h) }, rows);
                };
                self.mlp
                    .forward(Input::Rows(normed), t, tmp, false, &epilogue, up, gated);
            }
        }
    }

    pub fn size(&self) -> Size {
        let norms = match &self.norms {
            Norms::Post { attn, mlp } => attn.size() + mlp.size(),
            Norms::Pre { attn, mlp } => {
                attn.as_ref().map_or(Size::default(), Norm::size) + mlp.size()
            }
            Norms::Sandwich {
                pre_attn,
                post_attn,
                pre_mlp,
                post_mlp,
            } => pre_attn.size() + post_attn.size() + pre_mlp.size() + post_mlp.size(),
        };
        self.attn.size() + self.mlp.size() + norms
    }

    pub fn flops(&self, len: usize) -> f64 {
        self.attn.flops(len) + self.mlp.flops(len)
    }
}

simd_fn! {
    /// `dst += src`.
    fn add(dst: &mut [f32], src: &[f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d += *s;
        }
    }
}
