//! ModernBERT (gte-modernbert, modernbert-embed, ModernBERT-base/large).
//!
//! Pre-norm layers without biases, a GeGLU MLP, rotary positions with one theta for
//! global layers and another for local ones, global attention every Nth layer and a
//! sliding window (`|i - j| <= local_attention / 2`) in the others, a final norm. The
//! first layer has no attention norm (the embeddings are normalized already).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::{Checkpoint, RopeParameters, ROTARY_MIN_POSITIONS};
use crate::backbone::rope::Rope;
use crate::backbone::{Backbone, Block, Embeddings, Mlp, Norms, SelfAttention, Shape, Size, Stack};
use crate::error::Result;
use crate::head::classifier::{ClassifierHead, Pool, ScoreActivation, Squash};
use crate::kernels::attention::Span;

/// What a layer's attention sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LayerType {
    FullAttention,
    SlidingAttention,
}

/// `config.json` of `ModernBertModel`: transformers 5's keys, and the older ones Hub
/// checkpoints carry (`global_rope_theta`, `local_rope_theta`,
/// `global_attn_every_n_layers`).
#[derive(Deserialize)]
struct ModernBertConfig {
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
    #[serde(default = "gelu")]
    hidden_activation: String,
    /// Only `norm_eps` is read (a `layer_norm_eps` is ignored, as transformers does).
    #[serde(default = "eps")]
    norm_eps: f64,
    #[serde(default)]
    norm_bias: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default)]
    layer_types: Option<Vec<LayerType>>,
    #[serde(default = "every")]
    global_attn_every_n_layers: usize,
    /// Per layer type: `{"full_attention": {...}, "sliding_attention": {...}}`.
    #[serde(default)]
    rope_parameters: Option<BTreeMap<String, RopeParameters>>,
    #[serde(default)]
    global_rope_theta: Option<f64>,
    #[serde(default)]
    local_rope_theta: Option<f64>,
    /// The whole window; each side sees half.
    #[serde(default = "window")]
    local_attention: usize,
    #[serde(default = "positions")]
    max_position_embeddings: usize,
    /// The classification head's pooling: `cls` or `mean`.
    #[serde(default = "cls")]
    classifier_pooling: String,
    #[serde(default = "gelu")]
    classifier_activation: String,
    #[serde(default)]
    classifier_bias: bool,
}

fn cls() -> String {
    "cls".into()
}

fn vocab() -> usize {
    50368
}
fn hidden() -> usize {
    768
}
fn intermediate() -> usize {
    1152
}
fn layers() -> usize {
    22
}
fn heads() -> usize {
    12
}
fn gelu() -> String {
    "gelu".into()
}
fn eps() -> f64 {
    1e-5
}
fn every() -> usize {
    3
}
fn window() -> usize {
    128
}
fn positions() -> usize {
    8192
}

pub fn load(c: &mut Checkpoint) -> Result<Box<dyn Backbone>> {
    let cfg: ModernBertConfig = c.config()?;
    c.weights
        .detect_prefix("embeddings.tok_embeddings.weight", &["", "model."])?;
    let h = cfg.hidden_size;
    let heads = cfg.num_attention_heads;
    let d = c.head_dim(h, heads)?;
    let act = c.activation("hidden_activation", &cfg.hidden_activation)?;
    let n = cfg.num_hidden_layers;
    let every = cfg.global_attn_every_n_layers.max(1);
    let types = match cfg.layer_types {
        Some(t) if t.len() == n => t,
        Some(t) => {
            return Err(c.invalid("layer_types", format!("{} entries for {n} layers", t.len())))
        }
        None => (0..n)
            .map(|i| {
                if i % every == 0 {
                    LayerType::FullAttention
                } else {
                    LayerType::SlidingAttention
                }
            })
            .collect(),
    };
    // A theta inside rope_parameters wins over the older flat keys.
    let theta = |key: &str, old: Option<f64>, default: f64| -> Result<(f64, RopeParameters)> {
        let p = cfg
            .rope_parameters
            .as_ref()
            .and_then(|r| r.get(key))
            .cloned()
            .unwrap_or_default();
        p.scaling(c, "rope_parameters")?;
        Ok((p.rope_theta.or(old).unwrap_or(default), p))
    };
    let (global_theta, global_p) = theta("full_attention", cfg.global_rope_theta, 160_000.0)?;
    let (local_theta, local_p) = theta("sliding_attention", cfg.local_rope_theta, 10_000.0)?;
    let table = cfg.max_position_embeddings.max(ROTARY_MIN_POSITIONS);
    let global = Arc::new(Rope::new(
        global_theta,
        d,
        table,
        global_p.scaling(c, "rope_parameters")?,
    ));
    let local = Arc::new(Rope::new(
        local_theta,
        d,
        table,
        local_p.scaling(c, "rope_parameters")?,
    ));
    let eps = cfg.norm_eps;
    let nb = cfg.norm_bias;
    let embeddings = Embeddings {
        word: c.vocabulary("embeddings.tok_embeddings", cfg.vocab_size, h)?,
        position: None,
        position_offset: 0,
        token_type: None,
        scale: None,
        norm: Some(c.layer_norm("embeddings.norm", h, eps, nb)?),
        hidden: h,
        vocab: cfg.vocab_size,
    };
    let i = cfg.intermediate_size;
    let blocks = types
        .iter()
        .enumerate()
        .map(|(l, kind)| {
            let p = format!("layers.{l}");
            let (rope, span) = match kind {
                LayerType::FullAttention => (global.clone(), Span::FULL),
                LayerType::SlidingAttention => {
                    (local.clone(), Span::window(cfg.local_attention / 2))
                }
            };
            Ok(Block {
                attn: SelfAttention {
                    qkv: c.linear(&format!("{p}.attn.Wqkv"), 3 * h, h, cfg.attention_bias)?,
                    out: c.linear(&format!("{p}.attn.Wo"), h, h, cfg.attention_bias)?,
                    heads,
                    kv_heads: heads,
                    head_dim: d,
                    scale: (d as f64).powf(-0.5) as f32,
                    qk_norm: None,
                    rope: Some(rope),
                    span,
                    bias: None,
                },
                // Wi is [input | gate] with the activation on the input half: already
                // the gated MLP's order.
                mlp: Mlp::Gated {
                    up: c.linear(&format!("{p}.mlp.Wi"), 2 * i, h, cfg.mlp_bias)?,
                    down: c.linear(&format!("{p}.mlp.Wo"), h, i, cfg.mlp_bias)?,
                    act,
                },
                norms: Norms::Pre {
                    attn: if l == 0 {
                        None
                    } else {
                        Some(c.layer_norm(&format!("{p}.attn_norm"), h, eps, nb)?)
                    },
                    mlp: c.layer_norm(&format!("{p}.mlp_norm"), h, eps, nb)?,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // The forward pass is the standard stack's, with the final norm.
    Ok(Box::new(Stack {
        embeddings,
        blocks,
        final_norm: Some(c.layer_norm("final_norm", h, eps, nb)?),
        shape: Shape {
            architecture: "modernbert",
            hidden_size: h,
            intermediate_size: i,
            layers: n,
            heads,
            kv_heads: heads,
            head_dim: d,
            vocab_size: cfg.vocab_size,
            max_positions: table,
            config_positions: cfg.max_position_embeddings,
        },
        shared: Size {
            params: 0,
            bytes: global.bytes() + local.bytes(),
        },
    }))
}

/// `ModernBertForSequenceClassification`'s head (gte-reranker-modernbert): pool
/// (first token or mean), `norm(act(dense(x)))`, then `classifier`.
pub fn classifier(c: &mut Checkpoint, labels: usize) -> Result<ClassifierHead> {
    let cfg: ModernBertConfig = c.config()?;
    let h = cfg.hidden_size;
    let pool = match cfg.classifier_pooling.as_str() {
        "cls" => Pool::First,
        "mean" => Pool::Mean,
        other => {
            return Err(c.invalid(
                "classifier_pooling",
                format!("{other:?} is not supported (cls, mean)"),
            ))
        }
    };
    let act = c.activation("classifier_activation", &cfg.classifier_activation)?;
    c.at_prefix("", |c| {
        Ok(ClassifierHead {
            pool,
            dense: c.linear("head.dense", h, h, cfg.classifier_bias)?,
            squash: Squash::Act(act),
            norm: Some(c.layer_norm("head.norm", h, cfg.norm_eps, cfg.norm_bias)?),
            out: c.linear("classifier", labels, h, true)?,
            labels: Vec::new(),
            activation: ScoreActivation::Identity,
        })
    })
}
