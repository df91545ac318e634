//! Qwen3 (Qwen3-Embedding 0.6B / 4B / 8B): a decoder body used as an encoder.
//!
//! Pre-norm layers with RMSNorm, causal attention (each text sees only itself and
//! earlier tokens, even packed beside others), grouped-query heads with an explicit
//! head size, RMSNorm over each query and key head before rotary, SwiGLU, a final
//! norm. The embedding is the last token's state: the `<|endoftext|>` the
//! tokenizer appends (last-token pooling in the folder's Pooling module).

use std::sync::Arc;

use serde::Deserialize;

use super::{Checkpoint, RopeParameters, ROTARY_MIN_POSITIONS};
use crate::backbone::rope::Rope;
use crate::backbone::{Backbone, Block, Embeddings, Mlp, Norms, SelfAttention, Shape, Size, Stack};
use crate::error::Result;
use crate::kernels::attention::Span;

/// `config.json` of `Qwen3Model` / `Qwen3ForCausalLM`, with transformers' defaults.
#[derive(Deserialize)]
struct Qwen3Config {
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
    /// `None` means as many as query heads.
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    /// Not derived from hidden / heads: transformers' default is 128.
    #[serde(default = "head_dim")]
    head_dim: usize,
    #[serde(default = "silu")]
    hidden_act: String,
    #[serde(default = "eps")]
    rms_norm_eps: f64,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rope_scaling: Option<RopeParameters>,
    #[serde(default = "positions")]
    max_position_embeddings: usize,
    #[serde(default)]
    use_sliding_window: bool,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    /// Bidirectional Qwen3 embedders set this to false.
    #[serde(default = "yes")]
    is_causal: bool,
}

fn vocab() -> usize {
    151_936
}
fn hidden() -> usize {
    4096
}
fn intermediate() -> usize {
    22_016
}
fn layers() -> usize {
    32
}
fn heads() -> usize {
    32
}
fn head_dim() -> usize {
    128
}
fn silu() -> String {
    "silu".into()
}
fn eps() -> f64 {
    1e-6
}
fn positions() -> usize {
    32_768
}
fn yes() -> bool {
    true
}

pub fn load(c: &mut Checkpoint) -> Result<Box<dyn Backbone>> {
    let cfg: Qwen3Config = c.config()?;
    if cfg.use_sliding_window
        || cfg
            .layer_types
            .as_ref()
            .is_some_and(|t| t.iter().any(|t| t != "full_attention"))
    {
        return Err(c.invalid(
            "use_sliding_window",
            "sliding-window Qwen3 layers are not supported (Qwen3-Embedding has none)",
        ));
    }
    c.weights
        .detect_prefix("embed_tokens.weight", &["", "model."])?;
    let h = cfg.hidden_size;
    let heads = cfg.num_attention_heads;
    let kv_heads = cfg.num_key_value_heads.unwrap_or(heads);
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(c.invalid(
            "num_key_value_heads",
            format!("{kv_heads} does not divide num_attention_heads {heads}"),
        ));
    }
    let d = cfg.head_dim;
    let act = c.activation("hidden_act", &cfg.hidden_act)?;
    let eps = cfg.rms_norm_eps;
    let rope_params = cfg
        .rope_parameters
        .clone()
        .or_else(|| cfg.rope_scaling.clone())
        .unwrap_or_default();
    let theta = rope_params
        .rope_theta
        .or(cfg.rope_theta)
        .unwrap_or(10_000.0);
    let table = cfg.max_position_embeddings.max(ROTARY_MIN_POSITIONS);
    let rope = Arc::new(Rope::new(
        theta,
        d,
        table,
        rope_params.scaling(c, "rope_parameters")?,
    ));
    let embeddings = Embeddings {
        word: c.vocabulary("embed_tokens", cfg.vocab_size, h)?,
        position: None,
        position_offset: 0,
        token_type: None,
        scale: None,
        norm: None,
        hidden: h,
        vocab: cfg.vocab_size,
    };
    let i = cfg.intermediate_size;
    let (q, kv) = (heads * d, kv_heads * d);
    let span = if cfg.is_causal {
        Span::CAUSAL
    } else {
        Span::FULL
    };
    let blocks = (0..cfg.num_hidden_layers)
        .map(|l| {
            let p = format!("layers.{l}");
            let a = format!("{p}.self_attn");
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
                    scale: (d as f64).powf(-0.5) as f32,
                    qk_norm: Some((
                        c.rms_norm(&format!("{a}.q_norm"), d, eps, false)?,
                        c.rms_norm(&format!("{a}.k_norm"), d, eps, false)?,
                    )),
                    rope: Some(rope.clone()),
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
                norms: Norms::Pre {
                    attn: Some(c.rms_norm(&format!("{p}.input_layernorm"), h, eps, false)?),
                    mlp: c.rms_norm(&format!("{p}.post_attention_layernorm"), h, eps, false)?,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // The forward pass is the standard stack's, with the final norm.
    Ok(Box::new(Stack {
        embeddings,
        blocks,
        final_norm: Some(c.rms_norm("norm", h, eps, false)?),
        shape: Shape {
            architecture: "qwen3",
            hidden_size: h,
            intermediate_size: i,
            layers: cfg.num_hidden_layers,
            heads,
            kv_heads,
            head_dim: d,
            vocab_size: cfg.vocab_size,
            max_positions: table,
            config_positions: cfg.max_position_embeddings,
        },
        shared: Size {
            params: 0,
            bytes: rope.bytes(),
        },
    }))
}
