//! sentence-transformers' `Dense` module: a linear projection after pooling.

use std::path::Path;

use crate::config::{read_json, DenseConfig};
use crate::error::{Error, Result};
use crate::kernels::gemm::Linear;
use crate::weights::Weights;

#[derive(Debug, Clone, Copy)]
enum Activation {
    Identity,
    Tanh,
    Relu,
    Gelu,
    Sigmoid,
}

pub struct Dense {
    linear: Linear,
    activation: Activation,
}

impl Dense {
    pub fn load(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let cfg: DenseConfig = read_json(&config_path)?;
        let activation = match cfg.activation_function.rsplit('.').next().unwrap_or("") {
            "Identity" => Activation::Identity,
            "Tanh" => Activation::Tanh,
            "ReLU" => Activation::Relu,
            "GELU" => Activation::Gelu,
            "Sigmoid" => Activation::Sigmoid,
            _ => {
                return Err(Error::invalid(
                    &config_path,
                    "activation_function",
                    format!("{:?} is not supported", cfg.activation_function),
                ))
            }
        };
        let path = dir.join("model.safetensors");
        if !path.exists() && dir.join("pytorch_model.bin").exists() {
            return Err(Error::MissingFile {
                path,
                why: "only safetensors weights are supported; this module has pytorch_model.bin"
                    .into(),
            });
        }
        let w = Weights::open(&path)?;
        let (n, k) = (cfg.out_features, cfg.in_features);
        let weight = w.tensor("linear.weight", &[n, k])?;
        let bias = if cfg.bias {
            w.tensor("linear.bias", &[n])?
        } else {
            vec![0.0; n]
        };
        Ok(Dense {
            linear: Linear::from_torch(&weight, bias, n, k),
            activation,
        })
    }

    pub fn in_features(&self) -> usize {
        self.linear.k
    }

    pub fn out_features(&self) -> usize {
        self.linear.n
    }

    pub fn params(&self) -> usize {
        self.linear.params()
    }

    /// Projects `m` vectors (`m × in`, row-major) to `m × out`.
    pub fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * self.linear.n];
        let bias = &self.linear.bias;
        let act = self.activation;
        self.linear.forward(x, m, &mut out, false, &|rows| {
            for row in rows.chunks_exact_mut(bias.len()) {
                for (v, b) in row.iter_mut().zip(bias) {
                    let x = *v + *b;
                    *v = match act {
                        Activation::Identity => x,
                        Activation::Tanh => x.tanh(),
                        Activation::Relu => x.max(0.0),
                        Activation::Gelu => crate::kernels::math::gelu(x),
                        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
                    };
                }
            }
        });
        out
    }
}
