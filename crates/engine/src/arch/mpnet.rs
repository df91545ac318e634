//! MPNet (all-mpnet-base-v2): BERT's layers plus a T5-style relative position bias.
//!
//! Position ids start after the padding id, as in RoBERTa, and every attention score
//! gets a learned bias that depends on the bucketed distance between the two tokens,
//! one table shared by all layers.

use std::path::Path;

use super::{layer_norm, linear, stacked_linear, Transformer};
use crate::config::ArchConfig;
use crate::encoder::{AttentionBias, Embeddings, Encoder, Layer};
use crate::error::{Error, Result};
use crate::weights::Weights;

const MAX_DISTANCE: usize = 128;

pub fn load(cfg: &ArchConfig, w: &mut Weights, config_path: &Path) -> Result<Transformer> {
    w.detect_prefix(
        "embeddings.word_embeddings.weight",
        &["", "mpnet.", "model."],
    )?;
    let h = cfg.hidden_size;
    let position_offset = cfg.pad_token_id.unwrap_or(1) + 1;
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
        token_type: None,
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
                    &["attention.attn.q", "attention.attn.k", "attention.attn.v"]
                        .map(|q| format!("{p}.{q}")),
                    h,
                    h,
                )?,
                attn_out: linear(w, &format!("{p}.attention.attn.o"), h, h)?,
                attn_norm: layer_norm(w, &format!("{p}.attention.LayerNorm"), h)?,
                ff_in: linear(w, &format!("{p}.intermediate.dense"), i, h)?,
                ff_out: linear(w, &format!("{p}.output.dense"), h, i)?,
                ff_norm: layer_norm(w, &format!("{p}.output.LayerNorm"), h)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let heads = cfg.num_attention_heads;
    let buckets = cfg.relative_attention_num_buckets.unwrap_or(32);
    let table = w.tensor("encoder.relative_attention_bias.weight", &[buckets, heads])?;
    let max_len = cfg.max_position_embeddings;
    let bias = RelativePositionBias::new(&table, buckets, heads, max_len);
    Ok(Transformer {
        encoder: Encoder {
            embeddings,
            layers,
            hidden: h,
            heads,
            eps: cfg.layer_norm_eps as f32,
        },
        bias: Some(Box::new(bias)),
        architecture: "mpnet",
    })
}

/// The bias of every head for every distance `j - i` in `-(max_len-1)..max_len`,
/// precomputed so that adding it to a row of scores is one contiguous slice add.
pub struct RelativePositionBias {
    /// `[head][distance + max_len - 1]`
    by_head: Vec<Vec<f32>>,
    max_len: usize,
}

impl RelativePositionBias {
    fn new(table: &[f32], buckets: usize, heads: usize, max_len: usize) -> Self {
        let by_head = (0..heads)
            .map(|hd| {
                (0..2 * max_len - 1)
                    .map(|k| {
                        let rel = k as i64 - (max_len as i64 - 1);
                        table[bucket(rel, buckets) * heads + hd]
                    })
                    .collect()
            })
            .collect();
        RelativePositionBias { by_head, max_len }
    }
}

/// MPNet's `relative_position_bucket` for `relative = j - i`, computed in f32 as
/// PyTorch does so that distances on a bucket edge land where PyTorch puts them.
fn bucket(relative: i64, buckets: usize) -> usize {
    let half = buckets / 2;
    let n = -relative;
    let mut ret = if n < 0 { half } else { 0 };
    let n = n.unsigned_abs() as usize;
    let max_exact = half / 2;
    if n < max_exact {
        ret += n;
    } else {
        let scale = ((MAX_DISTANCE as f64 / max_exact as f64).ln()) as f32;
        let v = (n as f32 / max_exact as f32).ln() / scale * (half - max_exact) as f32;
        ret += (max_exact + v as usize).min(half - 1);
    }
    ret
}

impl AttentionBias for RelativePositionBias {
    fn add(&self, head: usize, len: usize, scores: &mut [f32]) {
        let row_bias = &self.by_head[head];
        for (i, row) in scores.chunks_exact_mut(len).enumerate() {
            // Distance j - i for j = 0 is -i, at index max_len - 1 - i.
            let start = self.max_len - 1 - i;
            for (s, b) in row.iter_mut().zip(&row_bias[start..start + len]) {
                *s += *b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn buckets_follow_mpnet() {
        // Near distances get their own bucket; keys after the query are offset by 16.
        assert_eq!(bucket(0, 32), 0);
        assert_eq!(bucket(-3, 32), 3);
        assert_eq!(bucket(3, 32), 19);
        // Far distances share log-spaced buckets, capped at 15 (31 after).
        assert_eq!(bucket(-8, 32), 8);
        assert_eq!(bucket(-15, 32), 9);
        assert_eq!(bucket(-16, 32), 10);
        assert_eq!(bucket(-127, 32), 15);
        assert_eq!(bucket(-500, 32), 15);
        assert_eq!(bucket(500, 32), 31);
    }
}
