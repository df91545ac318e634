//! NomicBERT (nomic-embed-text v1 / v1.5): BERT's post-norm layers with rotary
//! positions, a SwiGLU MLP and (in the published models) no biases.
//!
//! Two config dialects exist. The Hub checkpoints were written by nomic's own code
//! with GPT-2 style keys (`n_embd`, `n_layer`, `rotary_emb_fraction`, `qkv_proj_bias`,
//! …) and GPT-2's defaults; transformers 5's built-in class reads its own keys
//! (`hidden_size`, `rope_parameters`, …) and silently ignores the others. We read
//! whichever dialect the file is in, with that dialect's defaults, and refuse the
//! remote options neither implementation we follow supports.

use std::sync::Arc;

use serde::Deserialize;

use super::{Checkpoint, RopeParameters, ROTARY_MIN_POSITIONS};
use crate::backbone::rope::{Rope, Scaling};
use crate::backbone::{Backbone, Block, Embeddings, Mlp, Norms, SelfAttention, Shape, Size, Stack};
use crate::error::Result;
use crate::kernels::attention::Span;
use crate::kernels::math::Activation;

/// transformers 5's `NomicBertConfig`.
#[derive(Deserialize)]
struct BuiltinConfig {
    #[serde(default = "b_hidden")]
    hidden_size: usize,
    #[serde(default = "b_layers")]
    num_hidden_layers: usize,
    #[serde(default = "b_heads")]
    num_attention_heads: usize,
    #[serde(default = "b_intermediate")]
    intermediate_size: usize,
    #[serde(default = "silu")]
    hidden_act: String,
    #[serde(default = "b_eps")]
    layer_norm_eps: f64,
    #[serde(default = "b_positions")]
    max_position_embeddings: usize,
    #[serde(default)]
    rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default = "two")]
    type_vocab_size: usize,
}

fn b_hidden() -> usize {
    768
}
fn b_layers() -> usize {
    12
}
fn b_heads() -> usize {
    12
}
fn b_intermediate() -> usize {
    3072
}
fn silu() -> String {
    "silu".into()
}
fn b_eps() -> f64 {
    1e-12
}
fn b_positions() -> usize {
    2048
}
fn two() -> usize {
    2
}

/// nomic's remote-code `NomicBertConfig` (a GPT-2 config), as the Hub files are.
#[derive(Deserialize)]
struct RemoteConfig {
    n_embd: usize,
    #[serde(default = "b_layers")]
    n_layer: usize,
    #[serde(default = "b_heads")]
    n_head: usize,
    #[serde(default)]
    n_inner: Option<usize>,
    #[serde(default = "gelu_new")]
    activation_function: String,
    #[serde(default = "r_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "r_positions")]
    n_positions: usize,
    #[serde(default)]
    rotary_emb_fraction: f64,
    #[serde(default = "r_base")]
    rotary_emb_base: f64,
    #[serde(default)]
    rotary_emb_interleaved: bool,
    #[serde(default)]
    rotary_scaling_factor: Option<f64>,
    #[serde(default = "yes")]
    qkv_proj_bias: bool,
    #[serde(default = "yes")]
    mlp_fc1_bias: bool,
    #[serde(default = "yes")]
    mlp_fc2_bias: bool,
    #[serde(default)]
    prenorm: bool,
    #[serde(default)]
    use_rms_norm: bool,
    #[serde(default = "two")]
    type_vocab_size: usize,
}

fn gelu_new() -> String {
    "gelu_new".into()
}
fn r_eps() -> f64 {
    1e-5
}
fn r_positions() -> usize {
    1024
}
fn r_base() -> f64 {
    1000.0
}
fn yes() -> bool {
    true
}

/// Either dialect, resolved.
struct Nomic {
    hidden: usize,
    layers: usize,
    heads: usize,
    intermediate: usize,
    /// Gated (SwiGLU, GeGLU) or plain MLP, and its activation.
    gated: bool,
    act: Activation,
    eps: f64,
    positions: usize,
    /// Rotated dimensions per head; 0 for learned absolute positions.
    rotary_dims: usize,
    theta: f64,
    scaling: Scaling,
    qkv_bias: bool,
    fc1_bias: bool,
    fc2_bias: bool,
    types: usize,
}

fn resolve(c: &Checkpoint) -> Result<Nomic> {
    let raw: serde_json::Map<String, serde_json::Value> = c.config()?;
    if !raw.contains_key("n_embd") {
        let cfg: BuiltinConfig = c.config()?;
        let d = c.head_dim(cfg.hidden_size, cfg.num_attention_heads)?;
        let rope = cfg.rope_parameters.unwrap_or_default();
        return Ok(Nomic {
            hidden: cfg.hidden_size,
            layers: cfg.num_hidden_layers,
            heads: cfg.num_attention_heads,
            intermediate: cfg.intermediate_size,
            gated: true,
            act: c.activation("hidden_act", &cfg.hidden_act)?,
            eps: cfg.layer_norm_eps,
            positions: cfg.max_position_embeddings,
            rotary_dims: d,
            theta: rope.rope_theta.or(cfg.rope_theta).unwrap_or(1000.0),
            scaling: rope.scaling(c, "rope_parameters")?,
            qkv_bias: false,
            fc1_bias: false,
            fc2_bias: false,
            types: cfg.type_vocab_size,
        });
    }
    let cfg: RemoteConfig = c.config()?;
    let unsupported =
        |field: &str, what: &str| Err(c.invalid(field, format!("{what} is not supported")));
    if cfg.prenorm {
        return unsupported("prenorm", "a pre-norm NomicBERT");
    }
    if cfg.use_rms_norm {
        return unsupported("use_rms_norm", "RMSNorm in NomicBERT");
    }
    if cfg.rotary_emb_interleaved {
        return unsupported("rotary_emb_interleaved", "interleaved rotary");
    }
    if cfg.rotary_scaling_factor.is_some() {
        return unsupported(
            "rotary_scaling_factor",
            "dynamic NTK scaling (leave it null: the published v1.5 config does)",
        );
    }
    let (gated, act) = match cfg.activation_function.as_str() {
        "swiglu" => (true, Activation::Silu),
        "geglu" => (true, Activation::GeluErf),
        other => match Activation::from_name(other) {
            Some(act) => (false, act),
            None => {
                return Err(c.invalid(
                    "activation_function",
                    format!(
                        "{other:?} is not supported (swiglu, geglu, {})",
                        Activation::NAMES
                    ),
                ))
            }
        },
    };
    let h = cfg.n_embd;
    // nomic's gated MLP rounds its width up to a multiple of 256.
    let intermediate = if gated {
        cfg.n_inner.unwrap_or(8 * h / 3).next_multiple_of(256)
    } else {
        cfg.n_inner.unwrap_or(4 * h)
    };
    let d = c.head_dim(h, cfg.n_head)?;
    let rotary_dims = ((d as f64 * cfg.rotary_emb_fraction) as usize) & !1;
    Ok(Nomic {
        hidden: h,
        layers: cfg.n_layer,
        heads: cfg.n_head,
        intermediate,
        gated,
        act,
        eps: cfg.layer_norm_epsilon,
        positions: cfg.n_positions,
        rotary_dims,
        theta: cfg.rotary_emb_base,
        scaling: Scaling::None,
        qkv_bias: cfg.qkv_proj_bias,
        fc1_bias: cfg.mlp_fc1_bias,
        fc2_bias: cfg.mlp_fc2_bias,
        types: cfg.type_vocab_size,
    })
}

pub fn load(c: &mut Checkpoint) -> Result<Box<dyn Backbone>> {
    let cfg = resolve(c)?;
    c.weights.detect_prefix(
        "embeddings.word_embeddings.weight",
        &["", "bert.", "nomic_bert.", "model."],
    )?;
    let h = cfg.hidden;
    let heads = cfg.heads;
    let d = h / heads;
    // nomic's code pads the vocabulary; the table's own size is the truth.
    let vocab = c.weights.shape("embeddings.word_embeddings.weight")?[0];
    let absolute = cfg.rotary_dims == 0;
    let table = if absolute {
        cfg.positions
    } else {
        cfg.positions.max(ROTARY_MIN_POSITIONS)
    };
    let rope =
        (!absolute).then(|| Arc::new(Rope::new(cfg.theta, cfg.rotary_dims, table, cfg.scaling)));
    let embeddings = Embeddings {
        word: c.vocabulary("embeddings.word_embeddings", vocab, h)?,
        position: if absolute {
            Some(c.table("embeddings.position_embeddings", cfg.positions, h)?)
        } else {
            None
        },
        position_offset: 0,
        token_type: match cfg.types {
            0 => None,
            n => Some(c.table("embeddings.token_type_embeddings", n, h)?),
        },
        scale: None,
        norm: Some(c.layer_norm("emb_ln", h, cfg.eps, true)?),
        hidden: h,
        vocab,
    };
    let i = cfg.intermediate;
    let blocks = (0..cfg.layers)
        .map(|l| {
            let p = format!("encoder.layers.{l}");
            let mlp = if cfg.gated {
                // fc12 is the activated gate, fc11 the linear half.
                Mlp::Gated {
                    up: c.stacked(
                        &[&format!("{p}.mlp.fc12"), &format!("{p}.mlp.fc11")],
                        &[i, i],
                        h,
                        cfg.fc1_bias,
                    )?,
                    down: c.linear(&format!("{p}.mlp.fc2"), h, i, cfg.fc2_bias)?,
                    act: cfg.act,
                }
            } else {
                Mlp::Plain {
                    up: c.linear(&format!("{p}.mlp.fc1"), i, h, cfg.fc1_bias)?,
                    down: c.linear(&format!("{p}.mlp.fc2"), h, i, cfg.fc2_bias)?,
                    act: cfg.act,
                }
            };
            Ok(Block {
                attn: SelfAttention {
                    qkv: c.linear(&format!("{p}.attn.Wqkv"), 3 * h, h, cfg.qkv_bias)?,
                    out: c.linear(&format!("{p}.attn.out_proj"), h, h, cfg.qkv_bias)?,
                    heads,
                    kv_heads: heads,
                    head_dim: d,
                    scale: (d as f64).powf(-0.5) as f32,
                    qk_norm: None,
                    rope: rope.clone(),
                    span: Span::FULL,
                    bias: None,
                },
                mlp,
                norms: Norms::Post {
                    attn: c.layer_norm(&format!("{p}.norm1"), h, cfg.eps, true)?,
                    mlp: c.layer_norm(&format!("{p}.norm2"), h, cfg.eps, true)?,
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
            architecture: "nomic_bert",
            hidden_size: h,
            intermediate_size: i,
            layers: cfg.layers,
            heads,
            kv_heads: heads,
            head_dim: d,
            vocab_size: vocab,
            max_positions: table,
            config_positions: cfg.positions,
        },
        shared: Size {
            params: 0,
            bytes: rope.as_ref().map_or(0, |r| r.bytes()),
        },
    }))
}
