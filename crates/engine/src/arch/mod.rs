//! Architectures: one file per family, each mapping its checkpoint onto the shared
//! blocks of [`crate::backbone`].
//!
//! A family's file holds its typed config (what its `config.json` may say, with the
//! defaults transformers applies and both spellings where checkpoints differ), how
//! its tensors become blocks, and its `forward`. Adding a family is its file, one line
//! in [`FAMILIES`], and its tests.

pub mod bert;
pub mod gemma3;
pub mod gte;
pub mod modernbert;
pub mod mpnet;
pub mod nomic_bert;
pub mod qwen3;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::backbone::rope::Scaling;
use crate::backbone::{Backbone, Norm};
use crate::error::{Error, Result};
use crate::head::classifier::ClassifierHead;
use crate::kernels::gemm::Linear;
use crate::kernels::math::Activation;
use crate::kernels::pack::Weight;
use crate::kernels::quant::LowKernel;
use crate::kernels::Isa;
use crate::weights::{widen, Storage, Weights};

/// What a family's loader works from.
pub struct Checkpoint {
    pub config_path: PathBuf,
    pub weights: Weights,
    /// The kernels the weights are packed for.
    pub isa: Isa,
    /// The low-precision kernel linear layers are quantized for, if any.
    pub low: Option<LowKernel>,
    /// Tensor-name fragments whose linear layers stay in full precision when
    /// quantizing (see [`KEEP_FLOAT`]).
    pub keep_float: Vec<String>,
}

/// Which linear layers stay in full precision in a quantized model, by tensor-name
/// fragment; `EMBGEN_QUANTIZE_KEEP` (comma-separated fragments, or `none`) replaces
/// the list for measuring other choices. The default is what measurement chose
/// (README, "Quantization").
pub const KEEP_FLOAT: &[&str] = &[];

fn keep_float() -> Vec<String> {
    match std::env::var("EMBGEN_QUANTIZE_KEEP") {
        Ok(v) if v.trim() == "none" => Vec::new(),
        Ok(v) => v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        Err(_) => KEEP_FLOAT.iter().map(|s| s.to_string()).collect(),
    }
}

impl Checkpoint {
    /// `config.json` as the family's typed config.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T> {
        crate::config::read_json(&self.config_path)
    }

    /// An error about a field of `config.json`.
    pub fn invalid(&self, field: &str, message: impl Into<String>) -> Error {
        Error::invalid(&self.config_path, field, message)
    }

    /// A PyTorch `nn.Linear` named `name`, `[out, in]` = `[n, k]`, with its bias when
    /// `bias` says the architecture has one.
    pub fn linear(&self, name: &str, n: usize, k: usize, bias: bool) -> Result<Linear> {
        self.stacked(&[name], &[n], k, bias)
    }

    /// The layer for `weight`: quantized for the model's low-precision kernel unless
    /// `name` is one to keep in full precision.
    fn build(
        &self,
        name: &str,
        weight: Weight<'_>,
        bias: Option<Vec<f32>>,
        n: usize,
        k: usize,
    ) -> Linear {
        match self.low {
            Some(kernel) if !self.keep_float.iter().any(|f| name.contains(f.as_str())) => {
                Linear::low(weight, bias, n, k, self.isa, kernel)
            }
            _ => Linear::from_weight(weight, bias, n, k, self.isa),
        }
    }

    /// Linear layers that read the same input (query, key, value; gate and up),
    /// stacked so that one product computes all of them. `ns` are their output sizes.
    /// Weights stay in the checkpoint's 16-bit storage when every part has the same.
    pub fn stacked(&self, names: &[&str], ns: &[usize], k: usize, bias: bool) -> Result<Linear> {
        let total: usize = ns.iter().sum();
        let mut parts = Vec::with_capacity(names.len());
        let mut biases = Vec::with_capacity(total);
        for (name, &n) in names.iter().zip(ns) {
            parts.push(self.weights.raw(&format!("{name}.weight"), &[n, k])?);
            if bias {
                biases.extend(self.weights.tensor(&format!("{name}.bias"), &[n])?);
            }
        }
        let bias = bias.then_some(biases);
        let storage = parts[0].0;
        let halves = |bytes: &[u8]| -> Vec<u16> {
            bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect()
        };
        if storage != Storage::F32 && parts.iter().all(|(s, _)| *s == storage) {
            let bits: Vec<u16> = parts.iter().flat_map(|(_, b)| halves(b)).collect();
            let weight = match storage {
                Storage::Bf16 => Weight::Bf16(&bits),
                _ => Weight::F16(&bits),
            };
            return Ok(self.build(names[0], weight, bias, total, k));
        }
        let wide: Vec<f32> = parts.iter().flat_map(|(s, b)| widen(*s, b)).collect();
        Ok(self.build(names[0], Weight::F32(&wide), bias, total, k))
    }

    /// A fused linear layer whose output rows come in `parts` equal blocks, reordered
    /// as `order` says (e.g. `[1, 0]` swaps GTE's `[up | gate]` into the
    /// `[gate | up]` order the gated MLP wants).
    pub fn reordered(
        &self,
        name: &str,
        n: usize,
        k: usize,
        bias: bool,
        order: &[usize],
    ) -> Result<Linear> {
        let part = n / order.len();
        let (storage, bytes) = self.weights.raw(&format!("{name}.weight"), &[n, k])?;
        let width = storage.bytes();
        let mut w = Vec::with_capacity(bytes.len());
        for &p in order {
            w.extend_from_slice(&bytes[p * part * k * width..(p + 1) * part * k * width]);
        }
        let b = if bias {
            let b = self.weights.tensor(&format!("{name}.bias"), &[n])?;
            Some(
                order
                    .iter()
                    .flat_map(|&p| b[p * part..(p + 1) * part].to_vec())
                    .collect(),
            )
        } else {
            None
        };
        let halves: Vec<u16>;
        let wide: Vec<f32>;
        let weight = match storage {
            Storage::F32 => {
                wide = widen(storage, &w);
                Weight::F32(&wide)
            }
            s => {
                halves = w
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .collect();
                if s == Storage::Bf16 {
                    Weight::Bf16(&halves)
                } else {
                    Weight::F16(&halves)
                }
            }
        };
        Ok(self.build(name, weight, b, n, k))
    }

    /// A LayerNorm, under its current names or the `gamma`/`beta` of old BERT
    /// checkpoints; `bias: false` for bias-free norms.
    pub fn layer_norm(&self, name: &str, h: usize, eps: f64, bias: bool) -> Result<Norm> {
        let w = &self.weights;
        let (g, b) =
            if w.contains(&format!("{name}.weight")) || !w.contains(&format!("{name}.gamma")) {
                ("weight", "bias")
            } else {
                ("gamma", "beta")
            };
        let beta = if bias {
            Some(w.tensor(&format!("{name}.{b}"), &[h])?)
        } else {
            None
        };
        Ok(Norm::layer_norm(
            w.tensor(&format!("{name}.{g}"), &[h])?,
            beta,
            eps as f32,
        ))
    }

    /// An RMSNorm; `plus_one` for Gemma's, which multiplies by `1 + w`.
    pub fn rms_norm(&self, name: &str, h: usize, eps: f64, plus_one: bool) -> Result<Norm> {
        let mut w = self.weights.tensor(&format!("{name}.weight"), &[h])?;
        if plus_one {
            w.iter_mut().for_each(|x| *x += 1.0);
        }
        Ok(Norm::rms(w, eps as f32))
    }

    /// An embedding table `[rows, h]`, kept in the checkpoint's storage.
    pub fn table(&self, name: &str, rows: usize, h: usize) -> Result<crate::backbone::Table> {
        let (storage, bytes) = self.weights.raw(&format!("{name}.weight"), &[rows, h])?;
        Ok(crate::backbone::Table::from_raw(storage, &bytes))
    }

    /// The token embedding table: as [`Self::table`], but in a quantized model
    /// quantized too (int8 rows, or bf16), since in small models it is a third to a
    /// half of the memory and only a few rows are read per text.
    pub fn vocabulary(&self, name: &str, rows: usize, h: usize) -> Result<crate::backbone::Table> {
        let table = self.table(name, rows, h)?;
        Ok(match self.low {
            Some(k)
                if k.is_int8() && !self.keep_float.iter().any(|f| name.contains(f.as_str())) =>
            {
                table.to_int8(h)
            }
            Some(k) if k.is_bf16() => table.to_bf16(h),
            _ => table,
        })
    }

    /// `f` with the tensor prefix set to `prefix` (heads sit beside the backbone:
    /// `classifier.weight` next to `bert.encoder…`), then the backbone's again.
    pub fn at_prefix<T>(&mut self, prefix: &str, f: impl FnOnce(&Self) -> Result<T>) -> Result<T> {
        let saved = self.weights.replace_prefix(prefix);
        let out = f(self);
        self.weights.replace_prefix(&saved);
        out
    }

    /// An activation named in config.json.
    pub fn activation(&self, field: &str, name: &str) -> Result<Activation> {
        Activation::from_name(name).ok_or_else(|| {
            self.invalid(
                field,
                format!(
                    "activation {name:?} is not supported ({})",
                    Activation::NAMES
                ),
            )
        })
    }

    /// Checks that `heads` divides `hidden` and returns the head size.
    pub fn head_dim(&self, hidden: usize, heads: usize) -> Result<usize> {
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(self.invalid(
                "num_attention_heads",
                format!("{heads} does not divide hidden_size {hidden}"),
            ));
        }
        Ok(hidden / heads)
    }
}

/// Rotary tables cover at least this many positions: rotary models have no hard
/// length limit in PyTorch, and a model folder may ask for 8,192 tokens
/// (`max_seq_length`) although its config states fewer positions.
pub const ROTARY_MIN_POSITIONS: usize = 8192;

/// transformers' rotary settings: one entry of `rope_parameters` (transformers 5),
/// or the older `rope_scaling` object.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RopeParameters {
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_type: Option<String>,
    /// `rope_scaling`'s spelling of `rope_type`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub factor: Option<f64>,
}

impl RopeParameters {
    /// The scaling these parameters name; `field` is where they came from, for errors.
    pub fn scaling(&self, c: &Checkpoint, field: &str) -> Result<Scaling> {
        match self.rope_type.as_deref().or(self.kind.as_deref()) {
            None | Some("default") => Ok(Scaling::None),
            Some("linear") => Ok(Scaling::Linear {
                factor: self.factor.unwrap_or(1.0),
            }),
            Some(other) => Err(c.invalid(
                field,
                format!("rope type {other:?} is not supported (default, linear)"),
            )),
        }
    }
}

/// A family's loader: reads the typed config and the weights into a backbone.
type Loader = fn(&mut Checkpoint) -> Result<Box<dyn Backbone>>;

/// A family's classification head (cross-encoders, classifiers) for `labels` labels,
/// read after its backbone (so the checkpoint's prefix is known).
type HeadLoader = fn(&mut Checkpoint, usize) -> Result<ClassifierHead>;

/// A supported family: the `model_type` values that name it, its backbone, and its
/// sequence-classification head if cross-encoders of it exist.
struct Family {
    names: &'static [&'static str],
    load: Loader,
    classifier: Option<HeadLoader>,
}

const FAMILIES: &[Family] = &[
    Family {
        names: &["bert"],
        load: bert::load_bert,
        classifier: Some(bert::pooler_classifier),
    },
    Family {
        names: &["roberta", "xlm-roberta", "camembert"],
        load: bert::load_roberta,
        classifier: Some(bert::roberta_classifier),
    },
    Family {
        names: &["mpnet"],
        load: mpnet::load,
        classifier: None,
    },
    Family {
        names: &["modernbert"],
        load: modernbert::load,
        classifier: Some(modernbert::classifier),
    },
    Family {
        names: &["nomic_bert"],
        load: nomic_bert::load,
        classifier: None,
    },
    Family {
        names: &["gte", "new"],
        load: gte::load,
        classifier: Some(bert::pooler_classifier),
    },
    Family {
        names: &["qwen3"],
        load: qwen3::load,
        classifier: None,
    },
    Family {
        names: &["gemma3_text"],
        load: gemma3::load,
        classifier: None,
    },
];

/// The `model_type` values we load, for error messages.
pub fn supported() -> String {
    FAMILIES
        .iter()
        .flat_map(|f| f.names.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Deserialize)]
struct ModelType {
    model_type: String,
}

/// A family's backbone, with the checkpoint it came from (for heads whose tensors
/// live beside the backbone's).
pub struct Loaded {
    pub backbone: Box<dyn Backbone>,
    pub checkpoint: Checkpoint,
    classifier: Option<HeadLoader>,
    model_type: String,
}

impl Loaded {
    /// The family's sequence-classification head with `labels` outputs.
    pub fn classifier(&mut self, labels: usize) -> Result<ClassifierHead> {
        match self.classifier {
            Some(load) => load(&mut self.checkpoint, labels),
            None => Err(self.checkpoint.invalid(
                "model_type",
                format!(
                    "cross-encoders of {:?} are not supported (bert, xlm-roberta, modernbert, gte)",
                    self.model_type
                ),
            )),
        }
    }
}

/// Reads `dir`'s `config.json` and weights into the backbone of the family it names.
pub fn load(dir: &Path, isa: Isa, low: Option<LowKernel>) -> Result<Loaded> {
    let config_path = dir.join("config.json");
    let ModelType { model_type } = crate::config::read_json(&config_path)?;
    let Some(family) = FAMILIES
        .iter()
        .find(|f| f.names.contains(&model_type.as_str()))
    else {
        return Err(Error::invalid(
            &config_path,
            "model_type",
            format!(
                "architecture {model_type:?} is not supported ({})",
                supported()
            ),
        ));
    };
    let mut checkpoint = Checkpoint {
        config_path,
        weights: Weights::open_dir(dir)?,
        isa,
        low,
        keep_float: keep_float(),
    };
    let backbone = (family.load)(&mut checkpoint)?;
    Ok(Loaded {
        backbone,
        checkpoint,
        classifier: family.classifier,
        model_type,
    })
}
