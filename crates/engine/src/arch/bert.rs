//! BERT and RoBERTa: all-MiniLM-L6-v2, bge, e5, gte, paraphrase-multilingual-MiniLM.

use std::path::Path;

use super::{layer_norm, linear, stacked_linear, Transformer};
use crate::config::ArchConfig;
use crate::encoder::{Embeddings, Encoder, Layer};
use crate::error::{Error, Result};
use crate::weights::Weights;

pub fn load(
    cfg: &ArchConfig,
    w: &mut Weights,
    config_path: &Path,
    position_offset: usize,
    architecture: &'static str,
) -> Result<Transformer> {
    w.detect_prefix(
        "embeddings.word_embeddings.weight",
        &["", "bert.", "roberta.", "model.", "xlm_roberta."],
    )?;
    let h = cfg.hidden_size;
    let types = cfg.type_vocab_size.unwrap_or(0);
    let token_type = if types > 0 {
        let table = w.tensor("embeddings.token_type_embeddings.weight", &[types, h])?;
        Some(table[..h].to_vec())
    } else {
        None
    };
    if cfg.max_position_embeddings <= position_offset {
        return Err(Error::invalid(
            config_path,
            "max_position_embeddings",
            "leaves no room for any token",
        ));
    }
    let embeddings = Embeddings {
        word: w.tensor("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?,
        position: w.tensor(
            "embeddings.position_embeddings.weight",
            &[cfg.max_position_embeddings, h],
        )?,
        token_type,
        position_offset,
        max_positions: cfg.max_position_embeddings,
        norm: layer_norm(w, "embeddings.LayerNorm", h)?,
        vocab: cfg.vocab_size,
    };
    let i = cfg.intermediate_size;
    let layers = (0..cfg.num_hidden_layers)
        .map(|n| {
            let p = format!("encoder.layer.{n}");
            Ok(Layer {
                qkv: stacked_linear(
                    w,
                    &[
                        "attention.self.query",
                        "attention.self.key",
                        "attention.self.value",
                    ]
                    .map(|q| format!("{p}.{q}")),
                    h,
                    h,
                )?,
                attn_out: linear(w, &format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: layer_norm(w, &format!("{p}.attention.output.LayerNorm"), h)?,
                ff_in: linear(w, &format!("{p}.intermediate.dense"), i, h)?,
                ff_out: linear(w, &format!("{p}.output.dense"), h, i)?,
                ff_norm: layer_norm(w, &format!("{p}.output.LayerNorm"), h)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Transformer {
        encoder: Encoder {
            embeddings,
            layers,
            hidden: h,
            heads: cfg.num_attention_heads,
            eps: cfg.layer_norm_eps as f32,
        },
        bias: None,
        architecture,
    })
}
