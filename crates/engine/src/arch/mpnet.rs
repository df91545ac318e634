//! MPNet (all-mpnet-base-v2): BERT's layers plus a T5-style relative position bias.
//!
//! Position ids start after the padding id, as in RoBERTa, and every attention score
//! gets a learned bias that depends on the bucketed distance between the two tokens,
//! one table shared by all layers.

use std::sync::Arc;

use serde::Deserialize;

use super::Checkpoint;
use crate::backbone::position_bias::{PositionBias, RelativeBuckets};
use crate::backbone::{Backbone, Block, Embeddings, Mlp, Norms, SelfAttention, Shape, Size, Stack};
use crate::error::Result;
use crate::kernels::attention::Span;

/// `config.json` of `MPNetModel`.
#[derive(Deserialize)]
struct MpnetConfig {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "gelu")]
    hidden_act: String,
    #[serde(default = "eps")]
    layer_norm_eps: f64,
    max_position_embeddings: usize,
    vocab_size: usize,
    #[serde(default)]
    pad_token_id: Option<usize>,
    #[serde(default = "buckets")]
    relative_attention_num_buckets: usize,
}

fn gelu() -> String {
    "gelu".into()
}
fn eps() -> f64 {
    1e-12
}
fn buckets() -> usize {
    32
}

pub fn load(c: &mut Checkpoint) -> Result<Box<dyn Backbone>> {
    let cfg: MpnetConfig = c.config()?;
    c.weights.detect_prefix(
        "embeddings.word_embeddings.weight",
        &["", "mpnet.", "model."],
    )?;
    let h = cfg.hidden_size;
    let heads = cfg.num_attention_heads;
    let d = c.head_dim(h, heads)?;
    let act = c.activation("hidden_act", &cfg.hidden_act)?;
    let position_offset = cfg.pad_token_id.unwrap_or(1) + 1;
    if cfg.max_position_embeddings <= position_offset {
        return Err(c.invalid("max_position_embeddings", "leaves no room for any token"));
    }
    let embeddings = Embeddings {
        word: c.vocabulary("embeddings.word_embeddings", cfg.vocab_size, h)?,
        position: Some(c.table(
            "embeddings.position_embeddings",
            cfg.max_position_embeddings,
            h,
        )?),
        position_offset,
        token_type: None,
        scale: None,
        norm: Some(c.layer_norm("embeddings.LayerNorm", h, cfg.layer_norm_eps, true)?),
        hidden: h,
        vocab: cfg.vocab_size,
    };
    let buckets = cfg.relative_attention_num_buckets;
    let table = c
        .weights
        .tensor("encoder.relative_attention_bias.weight", &[buckets, heads])?;
    let bias = Arc::new(RelativeBuckets::new(
        &table,
        buckets,
        heads,
        cfg.max_position_embeddings,
    ));
    let i = cfg.intermediate_size;
    let eps = cfg.layer_norm_eps;
    let blocks = (0..cfg.num_hidden_layers)
        .map(|n| {
            let p = format!("encoder.layer.{n}");
            Ok(Block {
                attn: SelfAttention {
                    qkv: c.stacked(
                        &[
                            &format!("{p}.attention.attn.q"),
                            &format!("{p}.attention.attn.k"),
                            &format!("{p}.attention.attn.v"),
                        ],
                        &[h, h, h],
                        h,
                        true,
                    )?,
                    out: c.linear(&format!("{p}.attention.attn.o"), h, h, true)?,
                    heads,
                    kv_heads: heads,
                    head_dim: d,
                    scale: (d as f64).powf(-0.5) as f32,
                    qk_norm: None,
                    rope: None,
                    span: Span::FULL,
                    bias: Some(bias.clone() as Arc<dyn PositionBias>),
                },
                mlp: Mlp::Plain {
                    up: c.linear(&format!("{p}.intermediate.dense"), i, h, true)?,
                    down: c.linear(&format!("{p}.output.dense"), h, i, true)?,
                    act,
                },
                norms: Norms::Post {
                    attn: c.layer_norm(&format!("{p}.attention.LayerNorm"), h, eps, true)?,
                    mlp: c.layer_norm(&format!("{p}.output.LayerNorm"), h, eps, true)?,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let max_positions = embeddings.max_positions();
    // The forward pass is the standard stack's; the bias rides in each attention.
    Ok(Box::new(Stack {
        embeddings,
        blocks,
        final_norm: None,
        shape: Shape {
            architecture: "mpnet",
            hidden_size: h,
            intermediate_size: i,
            layers: cfg.num_hidden_layers,
            heads,
            kv_heads: heads,
            head_dim: d,
            vocab_size: cfg.vocab_size,
            max_positions,
            config_positions: cfg.max_position_embeddings,
        },
        shared: Size {
            params: buckets * heads,
            bytes: bias.bytes(),
        },
    }))
}
