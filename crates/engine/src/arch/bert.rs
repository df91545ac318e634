//! BERT and RoBERTa / XLM-RoBERTa: all-MiniLM-L6-v2, bge, e5, gte (v1), bge-m3,
//! multilingual-e5, paraphrase-multilingual-MiniLM.
//!
//! Post-norm layers, absolute learned positions, GELU MLP, biases everywhere. RoBERTa
//! differs only in where position ids start (after the padding id).

use serde::Deserialize;

use super::Checkpoint;
use crate::backbone::{Backbone, Block, Embeddings, Mlp, Norms, SelfAttention, Shape, Size, Stack};
use crate::error::Result;
use crate::head::classifier::{ClassifierHead, Pool, ScoreActivation, Squash};
use crate::kernels::attention::Span;

/// `config.json` of `BertModel` / `RobertaModel` / `XLMRobertaModel`.
#[derive(Deserialize)]
pub struct BertConfig {
    pub model_type: String,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "gelu")]
    pub hidden_act: String,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    #[serde(default)]
    pub pad_token_id: Option<usize>,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn gelu() -> String {
    "gelu".into()
}
fn eps() -> f64 {
    1e-12
}
fn two() -> usize {
    2
}

pub fn load_bert(c: &mut Checkpoint) -> Result<Box<dyn Backbone>> {
    load(c, false)
}

/// RoBERTa-style position ids start after the padding id.
pub fn load_roberta(c: &mut Checkpoint) -> Result<Box<dyn Backbone>> {
    load(c, true)
}

fn load(c: &mut Checkpoint, roberta: bool) -> Result<Box<dyn Backbone>> {
    let cfg: BertConfig = c.config()?;
    if let Some(p) = cfg
        .position_embedding_type
        .as_deref()
        .filter(|p| *p != "absolute")
    {
        return Err(c.invalid(
            "position_embedding_type",
            format!("{p:?} is not supported (absolute)"),
        ));
    }
    c.weights.detect_prefix(
        "embeddings.word_embeddings.weight",
        &["", "bert.", "roberta.", "xlm_roberta.", "model."],
    )?;
    let h = cfg.hidden_size;
    let heads = cfg.num_attention_heads;
    let d = c.head_dim(h, heads)?;
    let act = c.activation("hidden_act", &cfg.hidden_act)?;
    let position_offset = if roberta {
        cfg.pad_token_id.unwrap_or(1) + 1
    } else {
        0
    };
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
        token_type: match cfg.type_vocab_size {
            0 => None,
            n => Some(c.table("embeddings.token_type_embeddings", n, h)?),
        },
        scale: None,
        norm: Some(c.layer_norm("embeddings.LayerNorm", h, cfg.layer_norm_eps, true)?),
        hidden: h,
        vocab: cfg.vocab_size,
    };
    let i = cfg.intermediate_size;
    let eps = cfg.layer_norm_eps;
    let blocks = (0..cfg.num_hidden_layers)
        .map(|n| {
            let p = format!("encoder.layer.{n}");
            Ok(Block {
                attn: SelfAttention {
                    qkv: c.stacked(
                        &[
                            &format!("{p}.attention.self.query"),
                            &format!("{p}.attention.self.key"),
                            &format!("{p}.attention.self.value"),
                        ],
                        &[h, h, h],
                        h,
                        true,
                    )?,
                    out: c.linear(&format!("{p}.attention.output.dense"), h, h, true)?,
                    heads,
                    kv_heads: heads,
                    head_dim: d,
                    scale: (d as f64).powf(-0.5) as f32,
                    qk_norm: None,
                    rope: None,
                    span: Span::FULL,
                    bias: None,
                },
                mlp: Mlp::Plain {
                    up: c.linear(&format!("{p}.intermediate.dense"), i, h, true)?,
                    down: c.linear(&format!("{p}.output.dense"), h, i, true)?,
                    act,
                },
                norms: Norms::Post {
                    attn: c.layer_norm(&format!("{p}.attention.output.LayerNorm"), h, eps, true)?,
                    mlp: c.layer_norm(&format!("{p}.output.LayerNorm"), h, eps, true)?,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let max_positions = embeddings.max_positions();
    // The forward pass is the standard stack's.
    Ok(Box::new(Stack {
        embeddings,
        blocks,
        final_norm: None,
        shape: Shape {
            architecture: if roberta { "xlm-roberta" } else { "bert" },
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
        shared: Size::default(),
    }))
}

/// BERT's `BertForSequenceClassification` head (also GTE's): `tanh(pooler(h₀))`
/// then `classifier`. The pooler sits under the backbone's prefix (`bert.pooler`),
/// the classifier at the root.
pub fn pooler_classifier(c: &mut Checkpoint, labels: usize) -> Result<ClassifierHead> {
    let h = c.weights.shape("embeddings.word_embeddings.weight")?[1];
    let dense = c.linear("pooler.dense", h, h, true)?;
    let out = c.at_prefix("", |c| c.linear("classifier", labels, h, true))?;
    Ok(ClassifierHead {
        pool: Pool::First,
        dense,
        squash: Squash::Tanh,
        norm: None,
        out,
        labels: Vec::new(),
        activation: ScoreActivation::Identity,
    })
}

/// RoBERTa's classification head (bge-reranker): `out_proj(tanh(dense(h₀)))`, both
/// under `classifier.` at the root.
pub fn roberta_classifier(c: &mut Checkpoint, labels: usize) -> Result<ClassifierHead> {
    let h = c.weights.shape("embeddings.word_embeddings.weight")?[1];
    c.at_prefix("", |c| {
        Ok(ClassifierHead {
            pool: Pool::First,
            dense: c.linear("classifier.dense", h, h, true)?,
            squash: Squash::Tanh,
            norm: None,
            out: c.linear("classifier.out_proj", labels, h, true)?,
            labels: Vec::new(),
            activation: ScoreActivation::Identity,
        })
    })
}
