//! Gemma3 text models (EmbeddingGemma-300m's body).
//!
//! Embeddings scaled by √hidden; Gemma's RMSNorm (which multiplies by `1 + w`) before
//! and after both sublayers; grouped-query heads with per-head query/key norms and an
//! attention scale of `query_pre_attn_scalar^-1/2`; rotary with one theta for full
//! layers and another for sliding ones; a tanh-GELU gated MLP; a final norm.
//! EmbeddingGemma turns attention bidirectional (`use_bidirectional_attention`):
//! sliding layers then see `|i - j| <= sliding_window / 2`, full layers everything.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::{Checkpoint, RopeParameters, ROTARY_MIN_POSITIONS};
use crate::backbone::rope::Rope;
use crate::backbone::{Backbone, Block, Embeddings, Mlp, Norms, SelfAttention, Shape, Size, Stack};
use crate::error::Result;
use crate::kernels::attention::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LayerType {
    FullAttention,
    SlidingAttention,
}

/// `config.json` of `Gemma3TextModel`: transformers 5's keys and the Hub's older ones
/// (`rope_theta` for full layers, `rope_local_base_freq` for sliding ones,
/// `sliding_window_pattern`).
#[derive(Deserialize)]
struct Gemma3Config {
    #[serde(default = "vocab")]
    vocab_size: usize,
    #[serde(default = "hidden")]
    hidden_size: usize,
    #[serde(default = "intermediate")]
    intermediate_size: usize,
    #[serde(default = "layers")]
    num_hidden_layers: usize,
    #[serde(default = "heads")]
    num_attention_heads: usize,
    #[serde(default = "kv_heads")]
    num_key_value_heads: usize,
    #[serde(default = "head_dim")]
    head_dim: usize,
    #[serde(default = "gelu_tanh")]
    hidden_activation: String,
    #[serde(default = "eps")]
    rms_norm_eps: f64,
    #[serde(default = "head_dim")]
    query_pre_attn_scalar: usize,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default = "positions")]
    max_position_embeddings: usize,
    /// The window as written in the file (transformers keeps `W / 2 + 1` in memory
    /// when bidirectional, and writes `W` back).
    #[serde(default = "window")]
    sliding_window: usize,
    #[serde(default)]
    use_bidirectional_attention: bool,
    #[serde(default)]
    layer_types: Option<Vec<LayerType>>,
    #[serde(default, alias = "_sliding_window_pattern")]
    sliding_window_pattern: Option<usize>,
    #[serde(default)]
    rope_parameters: Option<BTreeMap<String, RopeParameters>>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_local_base_freq: Option<f64>,
    /// Applies to full-attention layers only.
    #[serde(default)]
    rope_scaling: Option<RopeParameters>,
}

fn vocab() -> usize {
    262_208
}
fn hidden() -> usize {
    2304
}
fn intermediate() -> usize {
    9216
}
fn layers() -> usize {
    26
}
fn heads() -> usize {
    8
}
fn kv_heads() -> usize {
    4
}
fn head_dim() -> usize {
    256
}
fn gelu_tanh() -> String {
    "gelu_pytorch_tanh".into()
}
fn eps() -> f64 {
    1e-6
}
fn positions() -> usize {
    131_072
}
fn window() -> usize {
    4096
}

pub fn load(c: &mut Checkpoint) -> Result<Box<dyn Backbone>> {
    let cfg: Gemma3Config = c.config()?;
    c.weights.detect_prefix(
        "embed_tokens.weight",
        &[
            "",
            "model.",
            "model.language_model.",
            "language_model.model.",
        ],
    )?;
    let h = cfg.hidden_size;
    let heads = cfg.num_attention_heads;
    let kv_heads = cfg.num_key_value_heads;
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(c.invalid(
            "num_key_value_heads",
            format!("{kv_heads} does not divide num_attention_heads {heads}"),
        ));
    }
    let d = cfg.head_dim;
    let act = c.activation("hidden_activation", &cfg.hidden_activation)?;
    let eps = cfg.rms_norm_eps;
    let n = cfg.num_hidden_layers;
    let pattern = cfg.sliding_window_pattern.unwrap_or(6).max(1);
    let types = match cfg.layer_types {
        Some(t) if t.len() == n => t,
        Some(t) => {
            return Err(c.invalid("layer_types", format!("{} entries for {n} layers", t.len())))
        }
        None => (0..n)
            .map(|i| {
                if (i + 1) % pattern == 0 {
                    LayerType::FullAttention
                } else {
                    LayerType::SlidingAttention
                }
            })
            .collect(),
    };
    let params = |key: &str| {
        cfg.rope_parameters
            .as_ref()
            .and_then(|r| r.get(key))
            .cloned()
    };
    let full_p = params("full_attention")
        .or_else(|| cfg.rope_scaling.clone())
        .unwrap_or_default();
    let local_p = params("sliding_attention").unwrap_or_default();
    let table = cfg.max_position_embeddings.max(ROTARY_MIN_POSITIONS);
    let full_rope = Arc::new(Rope::new(
        full_p.rope_theta.or(cfg.rope_theta).unwrap_or(1_000_000.0),
        d,
        table,
        full_p.scaling(c, "rope_parameters")?,
    ));
    let local_rope = Arc::new(Rope::new(
        local_p
            .rope_theta
            .or(cfg.rope_local_base_freq)
            .unwrap_or(10_000.0),
        d,
        table,
        local_p.scaling(c, "rope_parameters")?,
    ));
    let (full_span, sliding_span) = if cfg.use_bidirectional_attention {
        (Span::FULL, Span::window(cfg.sliding_window / 2))
    } else {
        // Causal sliding: the W keys up to and including the query.
        let w = cfg.sliding_window.max(1);
        (
            Span::CAUSAL,
            Span {
                left: Some(w - 1),
                right: Some(0),
            },
        )
    };
    let embeddings = Embeddings {
        word: c.vocabulary("embed_tokens", cfg.vocab_size, h)?,
        position: None,
        position_offset: 0,
        token_type: None,
        // float32(sqrt(hidden)), as Gemma's scaled embedding computes it.
        scale: Some((h as f64).sqrt() as f32),
        norm: None,
        hidden: h,
        vocab: cfg.vocab_size,
    };
    let i = cfg.intermediate_size;
    let (q, kv) = (heads * d, kv_heads * d);
    let norm = |name: &str, width: usize| c.rms_norm(name, width, eps, true);
    let blocks = types
        .iter()
        .enumerate()
        .map(|(l, kind)| {
            let p = format!("layers.{l}");
            let a = format!("{p}.self_attn");
            let (rope, span) = match kind {
                LayerType::FullAttention => (full_rope.clone(), full_span),
                LayerType::SlidingAttention => (local_rope.clone(), sliding_span),
            };
            Ok(Block {
                attn: SelfAttention {
                    qkv: c.stacked(
                        &[
                            &format!("{a}.q_proj"),
                            &format!("{a}.k_proj"),
                            &format!("{a}.v_proj"),
                        ],
                        &[q, kv, kv],
                        h,
                        cfg.attention_bias,
                    )?,
                    out: c.linear(&format!("{a}.o_proj"), h, q, cfg.attention_bias)?,
                    heads,
                    kv_heads,
                    head_dim: d,
                    scale: (cfg.query_pre_attn_scalar as f64).powf(-0.5) as f32,
                    qk_norm: Some((
                        norm(&format!("{a}.q_norm"), d)?,
                        norm(&format!("{a}.k_norm"), d)?,
                    )),
                    rope: Some(rope),
                    span,
                    bias: None,
                },
                mlp: Mlp::Gated {
                    up: c.stacked(
                        &[&format!("{p}.mlp.gate_proj"), &format!("{p}.mlp.up_proj")],
                        &[i, i],
                        h,
                        false,
                    )?,
                    down: c.linear(&format!("{p}.mlp.down_proj"), h, i, false)?,
                    act,
                },
                norms: Norms::Sandwich {
                    pre_attn: norm(&format!("{p}.input_layernorm"), h)?,
                    post_attn: norm(&format!("{p}.post_attention_layernorm"), h)?,
                    pre_mlp: norm(&format!("{p}.pre_feedforward_layernorm"), h)?,
                    post_mlp: norm(&format!("{p}.post_feedforward_layernorm"), h)?,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // The forward pass is the standard stack's, with the final norm.
    Ok(Box::new(Stack {
        embeddings,
        blocks,
        final_norm: Some(norm("norm", h)?),
        shape: Shape {
            architecture: "gemma3_text",
            hidden_size: h,
            intermediate_size: i,
            layers: n,
            heads,
            kv_heads,
            head_dim: d,
            vocab_size: cfg.vocab_size,
            max_positions: table,
            config_positions: cfg.max_position_embeddings,
        },
        shared: Size {
            params: 0,
            bytes: full_rope.bytes() + local_rope.bytes(),
        },
    }))
}
