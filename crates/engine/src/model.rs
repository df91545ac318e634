//! A sentence-transformers model folder, loaded and ready to embed.
//!
//! [`Model`] runs the whole pipeline `modules.json` describes (Transformer, Pooling,
//! Dense, Normalize) and exposes it in two steps, tokenize then forward, so that a
//! caller that batches across requests (the server) can tokenize each request on its
//! own and run many at once through [`Model::forward`].

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use rayon::ThreadPool;

use crate::arch::{self, Transformer};
use crate::config::{
    read_json, read_modules, ArchConfig, Module, PoolingConfig, SentenceBertConfig, StConfig,
};
use crate::dense::Dense;
use crate::encoder::Workspace;
use crate::error::{Error, Result};
use crate::kernels::norm::l2_normalize;
use crate::pooling::pool;
use crate::tokenizer::{TextTokenizer, Tokenized, Truncation};

/// A rayon pool with `threads` threads (all cores when `None`).
pub fn thread_pool(threads: Option<usize>) -> Result<Arc<ThreadPool>> {
    let n = threads
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("embgen-engine-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| Error::Request(format!("cannot start {n} threads: {e}")))
}

#[derive(Clone, Default)]
pub struct LoadOptions {
    /// The pool to compute on; models may share one. A new pool over all cores if `None`.
    pub pool: Option<Arc<ThreadPool>>,
    /// A lower token limit than the model's own `max_seq_length`.
    pub max_seq_length: Option<usize>,
}

/// Which prompt to put before each text.
#[derive(Debug, Clone, Default)]
pub enum Prompt {
    /// The model's `default_prompt_name`, if it has one.
    #[default]
    Default,
    None,
    /// One of the model's named prompts.
    Named(String),
    /// Literal text.
    Text(String),
}

#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// L2-normalize (on top of the model's own Normalize module, if it has one).
    pub normalize: bool,
    pub prompt: Prompt,
    /// At most this many tokens per text (never more than the model's limit).
    pub max_tokens: Option<usize>,
    pub truncation: Truncation,
    /// Texts per forward pass in [`Model::embed`].
    pub batch_size: usize,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            normalize: true,
            prompt: Prompt::Default,
            max_tokens: None,
            truncation: Truncation::Right,
            batch_size: 32,
        }
    }
}

/// One text's embedding and what the tokenizer did to it.
#[derive(Debug, Clone)]
pub struct Embedding {
    pub vector: Vec<f32>,
    pub tokens: usize,
    pub truncated: bool,
}

/// What a loaded model is, for logs and the server's `/model/info`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub architecture: &'static str,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub dimensions: usize,
    pub layers: usize,
    pub heads: usize,
    pub max_seq_length: usize,
    pub pooling: Vec<&'static str>,
    pub include_prompt: bool,
    pub normalize: bool,
    pub dense_layers: usize,
    pub parameters: usize,
    pub memory_bytes: usize,
    pub vocab_size: usize,
    pub prompts: Vec<String>,
    pub default_prompt: Option<String>,
    pub do_lower_case: bool,
    pub threads: usize,
    pub isa: &'static str,
}

pub struct Model {
    tokenizer: TextTokenizer,
    transformer: Transformer,
    pooling: PoolingConfig,
    dense: Vec<Dense>,
    normalize: bool,
    max_seq_length: usize,
    prompts: StConfig,
    pool: Arc<ThreadPool>,
    workspace: Mutex<Workspace>,
    info: ModelInfo,
}

impl Model {
    pub fn load(dir: impl AsRef<Path>, opts: LoadOptions) -> Result<Model> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.to_path_buf(),
                why: "not a model folder".into(),
            });
        }
        let cfg: ArchConfig = read_json(&dir.join("config.json"))?;
        let st = SentenceBertConfig::read(dir)?;
        let modules = read_modules(dir)?;
        let prompts = StConfig::read(dir)?;
        let tokenizer = TextTokenizer::load(dir, st.do_lower_case)?;
        let transformer = arch::load(dir, &cfg)?;
        let hidden = cfg.hidden_size;

        let mut pooling = None;
        let mut dense = Vec::new();
        let mut normalize = false;
        let mut dim = hidden;
        for module in &modules {
            match module {
                Module::Pooling(path) => {
                    let p = PoolingConfig::read(path)?;
                    if let Some(d) = p.dimension.filter(|d| *d != hidden) {
                        return Err(Error::invalid(
                            &path.join("config.json"),
                            "word_embedding_dimension",
                            format!("{d}, but the transformer's hidden_size is {hidden}"),
                        ));
                    }
                    dim = hidden * p.modes.len();
                    pooling = Some(p);
                }
                Module::Dense(path) => {
                    let d = Dense::load(path)?;
                    if d.in_features() != dim {
                        return Err(Error::invalid(
                            &path.join("config.json"),
                            "in_features",
                            format!("{}, but the vector before it has {dim}", d.in_features()),
                        ));
                    }
                    dim = d.out_features();
                    dense.push(d);
                }
                Module::Normalize => normalize = true,
            }
        }
        let pooling = pooling.ok_or_else(|| {
            Error::invalid(
                &dir.join("modules.json"),
                "Pooling",
                "the pipeline has no Pooling module",
            )
        })?;

        // sentence-transformers' limit: sentence_bert_config.json, else what the
        // position table allows; never more than that table, and lowered on request.
        let positions = transformer.encoder.max_tokens();
        let mut max_seq_length = st.max_seq_length.unwrap_or(positions).min(positions);
        if let Some(limit) = opts.max_seq_length {
            max_seq_length = max_seq_length.min(limit);
        }
        if max_seq_length <= tokenizer.special_tokens() {
            return Err(Error::Request(format!(
                "a max sequence length of {max_seq_length} leaves no room for text"
            )));
        }
        let pool = match opts.pool {
            Some(p) => p,
            None => crate::model::thread_pool(None)?,
        };
        let enc = &transformer.encoder;
        let parameters = enc.params() + dense.iter().map(Dense::params).sum::<usize>();
        let info = ModelInfo {
            path: dir.to_path_buf(),
            architecture: transformer.architecture,
            hidden_size: hidden,
            intermediate_size: cfg.intermediate_size,
            dimensions: dim,
            layers: enc.layers.len(),
            heads: enc.heads,
            max_seq_length,
            pooling: pooling.modes.iter().map(|m| m.name()).collect(),
            include_prompt: pooling.include_prompt,
            normalize,
            dense_layers: dense.len(),
            parameters,
            memory_bytes: parameters * 4,
            vocab_size: enc.embeddings.vocab,
            prompts: prompts.prompts.keys().cloned().collect(),
            default_prompt: prompts.default_prompt_name.clone(),
            do_lower_case: st.do_lower_case,
            threads: pool.current_num_threads(),
            isa: crate::kernels::isa().name(),
        };
        Ok(Model {
            tokenizer,
            transformer,
            pooling,
            dense,
            normalize,
            max_seq_length,
            prompts,
            pool,
            workspace: Mutex::new(Workspace::default()),
            info,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn dimensions(&self) -> usize {
        self.info.dimensions
    }

    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Floating-point operations to encode one text of `tokens` tokens: the dense
    /// layers (linear in length) plus attention (quadratic). Benchmarks divide by it.
    pub fn flops(&self, tokens: usize) -> f64 {
        let (h, i, l) = (
            self.info.hidden_size as f64,
            self.info.intermediate_size as f64,
            tokens as f64,
        );
        let dense = 2.0 * l * (4.0 * h * h + 2.0 * h * i);
        let attention = 4.0 * l * l * h;
        self.info.layers as f64 * (dense + attention)
    }

    fn resolve_prompt<'a>(&'a self, prompt: &'a Prompt) -> Result<Option<&'a str>> {
        Ok(match prompt {
            Prompt::None => None,
            Prompt::Text(t) => Some(t.as_str()),
            Prompt::Default => self
                .prompts
                .default_prompt_name
                .as_ref()
                .and_then(|n| self.prompts.prompts.get(n))
                .map(String::as_str),
            Prompt::Named(name) => Some(
                self.prompts
                    .prompts
                    .get(name)
                    .ok_or_else(|| {
                        Error::Request(format!(
                            "unknown prompt name {name:?}; this model has {:?}",
                            self.info.prompts
                        ))
                    })?
                    .as_str(),
            ),
        })
    }

    /// Tokenizes texts as sentence-transformers would, with the prompt and limit asked.
    pub fn tokenize(&self, texts: &[&str], opts: &EncodeOptions) -> Result<Vec<Tokenized>> {
        let prompt = self.resolve_prompt(&opts.prompt)?;
        let limit = opts
            .max_tokens
            .map_or(self.max_seq_length, |m| m.min(self.max_seq_length));
        self.tokenizer.encode(texts, prompt, limit, opts.truncation)
    }

    /// Each token of `text` with its string and offsets (no truncation, no prompt).
    pub fn token_details(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<crate::tokenizer::TokenDetail>> {
        self.tokenizer.details(text, add_special_tokens)
    }

    /// Embeds already tokenized texts in one packed forward pass. The result of each
    /// text does not depend on what else is in the batch.
    pub fn forward(&self, batch: &[&Tokenized], normalize: bool) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let vocab = self.info.vocab_size as u32;
        let mut ids = Vec::with_capacity(batch.iter().map(|t| t.ids.len()).sum());
        let mut seqs: Vec<Range<usize>> = Vec::with_capacity(batch.len());
        for t in batch {
            if t.ids.len() > self.transformer.encoder.max_tokens() {
                return Err(Error::Request(format!(
                    "{} tokens is more than the model's {} positions",
                    t.ids.len(),
                    self.transformer.encoder.max_tokens()
                )));
            }
            if let Some(bad) = t.ids.iter().find(|id| **id >= vocab) {
                return Err(Error::Request(format!(
                    "token id {bad} is outside the model's vocabulary of {vocab}"
                )));
            }
            let start = ids.len();
            ids.extend_from_slice(&t.ids);
            seqs.push(start..ids.len());
        }
        let mut ws = self.workspace.lock().unwrap_or_else(|e| e.into_inner());
        let hidden = self.info.hidden_size;
        let bias = self.transformer.bias.as_deref().map(|b| b as _);
        let ws: &mut Workspace = &mut ws;
        let vectors = self.pool.install(|| {
            self.transformer.encoder.forward(&ids, &seqs, bias, ws);
            let states = &ws.hidden[..ids.len() * hidden];
            let mut pooled: Vec<Vec<f32>> = seqs
                .par_iter()
                .zip(batch.par_iter())
                .map(|(r, t)| {
                    pool(
                        &self.pooling,
                        &states[r.start * hidden..r.end * hidden],
                        hidden,
                        t.prompt_tokens,
                    )
                })
                .collect();
            for d in &self.dense {
                let m = pooled.len();
                let flat: Vec<f32> = pooled.concat();
                let out = d.forward(&flat, m);
                pooled = out
                    .chunks_exact(d.out_features())
                    .map(<[f32]>::to_vec)
                    .collect();
            }
            pooled
        });
        Ok(vectors
            .into_iter()
            .map(|mut v| {
                if self.normalize || normalize {
                    l2_normalize(&mut v);
                }
                v
            })
            .collect())
    }

    /// Tokenizes and embeds `texts`, `opts.batch_size` texts per forward pass.
    pub fn embed(&self, texts: &[&str], opts: &EncodeOptions) -> Result<Vec<Embedding>> {
        if opts.batch_size == 0 {
            return Err(Error::Request("batch size must be at least 1".into()));
        }
        let tokens = self.tokenize(texts, opts)?;
        let mut out = Vec::with_capacity(texts.len());
        for chunk in tokens.chunks(opts.batch_size) {
            let refs: Vec<&Tokenized> = chunk.iter().collect();
            let vectors = self.forward(&refs, opts.normalize)?;
            out.extend(chunk.iter().zip(vectors).map(|(t, vector)| Embedding {
                vector,
                tokens: t.ids.len(),
                truncated: t.truncated,
            }));
        }
        Ok(out)
    }
}
