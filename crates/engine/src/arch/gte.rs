//! GTE v1.5 and mGTE (gte-base/large-en-v1.5, gte-multilingual-base,
//! snowflake-arctic-embed-m-v2.0): BERT's post-norm layers with rotary positions and a
//! GeGLU MLP.
//!
//! The Hub checkpoints run on Alibaba's remote code (`model_type: "new"`);
//! transformers 5 has the same model built in as `gte`. Both are read here, each with
//! its own defaults. The remote code's NTK rope scaling is applied as it does it:
//! statically, at every length (`inv_freq = (θ·f)^(-2k/d) / f^(2/d)`), which
//! transformers 5.24 cannot run at all.

use std::sync::Arc;

use serde::Deserialize;

use super::{Checkpoint, RopeParameters, ROTARY_MIN_POSITIONS};
use crate::backbone::rope::{Rope, Scaling};
use crate::backbone::{
    Backbone, Block, Embeddings, Mlp, Norm, Norms, SelfAttention, Shape, Size, Stack,
};
use crate::error::Result;
use crate::kernels::attention::Span;

/// `config.json` of transformers' `GteModel` or the remote `NewModel`. Defaults differ
/// between the two; `None` means "the dialect's default".
#[derive(Deserialize)]
struct GteConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "gelu")]
    hidden_act: String,
    #[serde(default = "eps")]
    layer_norm_eps: f64,
    #[serde(default = "one")]
    type_vocab_size: usize,
    #[serde(default)]
    max_position_embeddings: Option<usize>,
    #[serde(default)]
    rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    rope_theta: Option<f64>,
    /// The remote code's `{"type": "ntk", "factor": f, ["mixed_b": b]}`.
    #[serde(default)]
    rope_scaling: Option<RopeScaling>,
    #[serde(default)]
    layer_norm_type: Option<String>,
    #[serde(default)]
    position_embedding_type: Option<String>,
    #[serde(default = "yes")]
    pack_qkv: bool,
    #[serde(default)]
    logn_attention_scale: bool,
}

#[derive(Deserialize)]
struct RopeScaling {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    rope_type: Option<String>,
    #[serde(default)]
    factor: Option<f64>,
    #[serde(default)]
    mixed_b: Option<f64>,
}

fn gelu() -> String {
    "gelu".into()
}
fn eps() -> f64 {
    1e-12
}
fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}

/// The rotary frequencies the config asks for, over `d` dimensions.
fn frequencies(c: &Checkpoint, cfg: &GteConfig, d: usize) -> Result<Vec<f32>> {
    let remote = cfg.model_type == "new";
    let params = cfg.rope_parameters.clone().unwrap_or_default();
    let base =
        params
            .rope_theta
            .or(cfg.rope_theta)
            .unwrap_or(if remote { 10_000.0 } else { 160_000.0 });
    let Some(s) = &cfg.rope_scaling else {
        return Ok(Rope::frequencies(
            base,
            d,
            params.scaling(c, "rope_parameters")?,
        ));
    };
    let kind = s.kind.as_deref().or(s.rope_type.as_deref()).unwrap_or("");
    let f = s.factor.unwrap_or(1.0);
    match (kind, s.mixed_b) {
        (_, _) if f == 1.0 => Ok(Rope::frequencies(base, d, Scaling::None)),
        ("ntk", None) => Ok(Rope::frequencies(
            base * f,
            d,
            Scaling::Linear {
                factor: f.powf(2.0 / d as f64),
            },
        )),
        ("ntk", Some(b)) => {
            // Mixed NTK: the base stays, each pair is slowed by exp(a · m^b).
            let a = f.ln() / ((d / 2) as f64).powf(b);
            Ok(Rope::frequencies(base, d, Scaling::None)
                .iter()
                .enumerate()
                .map(|(k, inv)| (*inv as f64 / (a * ((k + 1) as f64).powf(b)).exp()) as f32)
                .collect())
        }
        ("linear", _) => Ok(Rope::frequencies(base, d, Scaling::Linear { factor: f })),
        (other, _) => Err(c.invalid(
            "rope_scaling",
            format!("rope scaling {other:?} is not supported (ntk, linear)"),
        )),
    }
}

pub fn load(c: &mut Checkpoint) -> Result<Box<dyn Backbone>> {
    let cfg: GteConfig = c.config()?;
    if cfg.logn_attention_scale {
        return Err(c.invalid(
            "logn_attention_scale",
            "log-n attention scaling is not supported",
        ));
    }
    c.weights.detect_prefix(
        "embeddings.word_embeddings.weight",
        &["", "new.", "gte.", "model."],
    )?;
    let h = cfg.hidden_size;
    let heads = cfg.num_attention_heads;
    let d = c.head_dim(h, heads)?;
    let act = c.activation("hidden_act", &cfg.hidden_act)?;
    let eps = cfg.layer_norm_eps;
    let positions = cfg
        .max_position_embeddings
        .unwrap_or(if cfg.model_type == "new" { 2048 } else { 8192 });
    let absolute = match cfg.position_embedding_type.as_deref() {
        None | Some("rope") => false,
        Some("absolute") => true,
        Some(other) => {
            return Err(c.invalid(
                "position_embedding_type",
                format!("{other:?} is not supported (rope, absolute)"),
            ))
        }
    };
    let rms = match cfg.layer_norm_type.as_deref() {
        None | Some("layer_norm") => false,
        Some("rms_norm") => true,
        Some(other) => {
            return Err(c.invalid(
                "layer_norm_type",
                format!("{other:?} is not supported (layer_norm, rms_norm)"),
            ))
        }
    };
    let table = if absolute {
        positions
    } else {
        positions.max(ROTARY_MIN_POSITIONS)
    };
    let rope = if absolute {
        None
    } else {
        Some(Arc::new(Rope::from_frequencies(
            &frequencies(c, &cfg, d)?,
            table,
        )))
    };
    let embeddings = Embeddings {
        word: c.vocabulary("embeddings.word_embeddings", cfg.vocab_size, h)?,
        position: if absolute {
            Some(c.table("embeddings.position_embeddings", positions, h)?)
        } else {
            None
        },
        position_offset: 0,
        token_type: match cfg.type_vocab_size {
            0 => None,
            n => Some(c.table("embeddings.token_type_embeddings", n, h)?),
        },
        scale: None,
        norm: Some(c.layer_norm("embeddings.LayerNorm", h, eps, true)?),
        hidden: h,
        vocab: cfg.vocab_size,
    };
    let norm = |name: &str| -> Result<Norm> {
        if rms {
            c.rms_norm(name, h, eps, false)
        } else {
            c.layer_norm(name, h, eps, true)
        }
    };
    let i = cfg.intermediate_size;
    let blocks = (0..cfg.num_hidden_layers)
        .map(|l| {
            let p = format!("encoder.layer.{l}");
            let qkv = if cfg.pack_qkv {
                c.linear(&format!("{p}.attention.qkv_proj"), 3 * h, h, true)?
            } else {
                c.stacked(
                    &[
                        &format!("{p}.attention.q_proj"),
                        &format!("{p}.attention.k_proj"),
                        &format!("{p}.attention.v_proj"),
                    ],
                    &[h, h, h],
                    h,
                    true,
                )?
            };
            Ok(Block {
                attn: SelfAttention {
                    qkv,
                    out: c.linear(&format!("{p}.attention.o_proj"), h, h, true)?,
                    heads,
                    kv_heads: heads,
                    head_dim: d,
                    scale: (d as f64).powf(-0.5) as f32,
                    qk_norm: None,
                    rope: rope.clone(),
                    span: Span::FULL,
                    bias: None,
                },
                // up_gate_proj is [up | gate]; the gated MLP wants the activated gate
                // first.
                mlp: Mlp::Gated {
                    up: c.reordered(&format!("{p}.mlp.up_gate_proj"), 2 * i, h, false, &[1, 0])?,
                    down: c.linear(&format!("{p}.mlp.down_proj"), h, i, true)?,
                    act,
                },
                norms: Norms::Post {
                    attn: norm(&format!("{p}.attn_ln"))?,
                    mlp: norm(&format!("{p}.mlp_ln"))?,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // The forward pass is the standard stack's.
    Ok(Box::new(Stack {
        embeddings,
        blocks,
        final_norm: None,
        shape: Shape {
            architecture: "gte",
            hidden_size: h,
            intermediate_size: i,
            layers: cfg.num_hidden_layers,
            heads,
            kv_heads: heads,
            head_dim: d,
            vocab_size: cfg.vocab_size,
            max_positions: table,
            config_positions: positions,
        },
        shared: Size {
            params: 0,
            bytes: rope.as_ref().map_or(0, |r| r.bytes()),
        },
    }))
}
