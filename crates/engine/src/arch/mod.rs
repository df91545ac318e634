//! Architectures: how each family's checkpoint maps onto the shared [`Encoder`].
//!
//! BERT-like encoders differ in little but tensor names, where position ids start,
//! and extras such as MPNet's relative position bias. Each family gets one file that
//! says only that; the helpers here read the parts they all have.

pub mod bert;
pub mod mpnet;

use std::path::Path;

use crate::config::ArchConfig;
use crate::encoder::{AttentionBias, Encoder, LayerNorm};
use crate::error::{Error, Result};
use crate::kernels::gemm::Linear;
use crate::weights::Weights;

/// A loaded transformer: the encoder and whatever it needs beside it.
pub struct Transformer {
    pub encoder: Encoder,
    pub bias: Option<Box<dyn AttentionBias + Send>>,
    pub architecture: &'static str,
}

/// Reads the weights in `dir` for the architecture `config.json` names.
pub fn load(dir: &Path, cfg: &ArchConfig) -> Result<Transformer> {
    let config_path = dir.join("config.json");
    check(cfg, &config_path)?;
    let mut weights = open_weights(dir)?;
    match cfg.model_type.as_str() {
        "bert" => bert::load(cfg, &mut weights, &config_path, 0, "bert"),
        // RoBERTa-style position ids start after the padding id.
        "roberta" | "xlm-roberta" | "camembert" => {
            let offset = cfg.pad_token_id.unwrap_or(1) + 1;
            bert::load(cfg, &mut weights, &config_path, offset, "roberta")
        }
        "mpnet" => mpnet::load(cfg, &mut weights, &config_path),
        other => Err(Error::invalid(
            &config_path,
            "model_type",
            format!("architecture {other:?} is not supported (bert, roberta, xlm-roberta, mpnet)"),
        )),
    }
}

fn check(cfg: &ArchConfig, path: &Path) -> Result<()> {
    if cfg.hidden_act != "gelu" {
        return Err(Error::invalid(
            path,
            "hidden_act",
            format!("activation {:?} is not supported (gelu)", cfg.hidden_act),
        ));
    }
    if let Some(p) = cfg.position_embedding_type.as_deref() {
        if p != "absolute" {
            return Err(Error::invalid(
                path,
                "position_embedding_type",
                format!("{p:?} is not supported (absolute)"),
            ));
        }
    }
    if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
        return Err(Error::invalid(
            path,
            "num_attention_heads",
            format!(
                "{} does not divide hidden_size {}",
                cfg.num_attention_heads, cfg.hidden_size
            ),
        ));
    }
    Ok(())
}

fn open_weights(dir: &Path) -> Result<Weights> {
    let path = dir.join("model.safetensors");
    if !path.exists() {
        let why = if dir.join("pytorch_model.bin").exists() {
            "only safetensors weights are supported; this folder has pytorch_model.bin \
             (convert it with safetensors' convert script)"
        } else if dir.join("model.safetensors.index.json").exists() {
            "sharded checkpoints are not supported"
        } else {
            "the model's weights are required"
        };
        return Err(Error::MissingFile {
            path,
            why: why.into(),
        });
    }
    Weights::open(&path)
}

/// A PyTorch `nn.Linear` named `name`, `[out, in]` = `[n, k]`.
pub(crate) fn linear(w: &Weights, name: &str, n: usize, k: usize) -> Result<Linear> {
    let weight = w.tensor(&format!("{name}.weight"), &[n, k])?;
    let bias = w.tensor(&format!("{name}.bias"), &[n])?;
    Ok(Linear::from_torch(&weight, bias, n, k))
}

/// Linear layers that read the same input (query, key, value), stacked so that one
/// GEMM computes all of them.
pub(crate) fn stacked_linear(w: &Weights, names: &[String], n: usize, k: usize) -> Result<Linear> {
    let mut weight = Vec::with_capacity(names.len() * n * k);
    let mut bias = Vec::with_capacity(names.len() * n);
    for name in names {
        weight.extend(w.tensor(&format!("{name}.weight"), &[n, k])?);
        bias.extend(w.tensor(&format!("{name}.bias"), &[n])?);
    }
    Ok(Linear::from_torch(&weight, bias, names.len() * n, k))
}

/// A LayerNorm, under its current names or the `gamma`/`beta` of old BERT checkpoints.
pub(crate) fn layer_norm(w: &Weights, name: &str, h: usize) -> Result<LayerNorm> {
    let (g, b) = if w.contains(&format!("{name}.weight")) {
        ("weight", "bias")
    } else {
        ("gamma", "beta")
    };
    Ok(LayerNorm {
        gamma: w.tensor(&format!("{name}.{g}"), &[h])?,
        beta: w.tensor(&format!("{name}.{b}"), &[h])?,
    })
}
