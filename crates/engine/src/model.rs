//! A sentence-transformers model folder, loaded and ready to embed.
//!
//! [`Model`] runs the whole pipeline `modules.json` describes (Transformer, Pooling,
//! Dense, Normalize) and exposes it in two steps, tokenize then forward, so that a
//! caller that batches across requests (the server) can tokenize each request on its
//! own and run many at once through [`Model::forward`].

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rayon::ThreadPool;

use crate::arch;
use crate::backbone::{Backbone, Batch, Workspace};
use crate::config::{
    read_modules, CrossEncoderConfig, SentenceBertConfig, StConfig, TokenizerConfig,
};
use crate::error::{Error, Result};
use crate::head::{EmbeddingHead, Finish, Head, Task};
use crate::kernels::quant::LowKernel;
use crate::kernels::Isa;
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
    /// The kernels to pack weights for; the process default ([`crate::kernels::isa`])
    /// if `None`. Tests and benchmarks load the same model once per instruction set.
    pub isa: Option<Isa>,
    /// A lower precision for the linear layers (and vocabulary), chosen at load.
    pub quantize: Quantize,
}

/// The precision a model's linear layers compute in, chosen when it loads.
///
/// `None` runs the checkpoint as stored (f32 products; bf16 and f16 weights are
/// widened as read). `Int8` quantizes weights per output channel and activations per
/// token, each in blocks of 64 along the depth (integer dot products, about a
/// quarter of the memory); `Bf16` rounds both to bf16
/// and sums in f32 on CPUs with AVX-512 BF16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Quantize {
    #[default]
    None,
    Int8,
    Bf16,
}

impl Quantize {
    /// What [`Quantize::parse`] accepts.
    pub const NAMES: &'static str = "none, int8, bf16";

    pub fn parse(s: &str) -> std::result::Result<Quantize, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "none" | "off" | "false" | "fp32" | "float32" => Ok(Quantize::None),
            "int8" | "i8" => Ok(Quantize::Int8),
            "bf16" | "bfloat16" => Ok(Quantize::Bf16),
            other => Err(format!(
                "{other:?} is not a quantization ({})",
                Quantize::NAMES
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Quantize::None => "none",
            Quantize::Int8 => "int8",
            Quantize::Bf16 => "bf16",
        }
    }

    /// The low-precision kernel for models loaded for `isa`, or why this CPU has none.
    pub fn kernel(self, isa: Isa) -> std::result::Result<Option<LowKernel>, String> {
        match self {
            Quantize::None => Ok(None),
            Quantize::Int8 => Ok(Some(LowKernel::int8_for(isa))),
            Quantize::Bf16 => LowKernel::bf16_for(isa).map(Some).ok_or_else(|| {
                format!(
                    "bf16 needs a CPU with AVX-512 BF16 (AMD Zen 4, Intel Sapphire Rapids or later) \
                     and the avx512 kernels; this one runs {} ({})",
                    isa.name(),
                    crate::kernels::cpu_description()
                )
            }),
        }
    }
}

impl std::str::FromStr for Quantize {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Quantize::parse(s)
    }
}

impl std::fmt::Display for Quantize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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
    /// Keep only the first N dimensions (Matryoshka), then normalize if asked.
    pub dimensions: Option<usize>,
    /// How [`Model::embed`] groups texts into forward passes.
    pub order: BatchOrder,
}

/// How [`Model::embed`] groups texts into batches. Results come back in the input's
/// order either way, and a text's vector does not depend on its batch (to within
/// rounding: tests/batching.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchOrder {
    /// Longest texts first, as `SentenceTransformer.encode` batches: a batch's texts
    /// are of similar length, so the threads' shares of attention are even. Measured
    /// on Zen 3 (MiniLM, the workload, batch 32): 3-4% faster than file order.
    #[default]
    LongestFirst,
    /// As given (`embgen bench`'s "file order" rows; its "sorted" rows are `LongestFirst`).
    AsGiven,
}

impl EncodeOptions {
    /// What the options ask of each vector after the model's pipeline.
    pub fn finish(&self) -> Finish {
        Finish::Embedding {
            normalize: self.normalize,
            dimensions: self.dimensions,
        }
    }
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            dimensions: None,
            normalize: true,
            prompt: Prompt::Default,
            max_tokens: None,
            truncation: Truncation::Right,
            batch_size: 32,
            order: BatchOrder::default(),
        }
    }
}

/// The texts' indices in the order [`Model::embed`] batches them.
fn batch_order(tokens: &[Tokenized], order: BatchOrder) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..tokens.len()).collect();
    if order == BatchOrder::LongestFirst {
        // Stable, so texts of equal length keep their order.
        idx.sort_by_key(|&i| std::cmp::Reverse(tokens[i].ids.len()));
    }
    idx
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
    /// What the model serves: "embedding", or "scoring" for cross-encoders.
    pub task: &'static str,
    pub architecture: &'static str,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub dimensions: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub max_seq_length: usize,
    /// How the checkpoint stores its weights (float32, float16, bfloat16).
    pub weights_dtype: &'static str,
    pub pooling: Vec<&'static str>,
    pub include_prompt: bool,
    pub normalize: bool,
    pub dense_layers: usize,
    pub parameters: usize,
    /// Bytes the loaded model holds: weights as packed for the kernels (padding
    /// included), tables, and shared rotary/bias tables.
    pub memory_bytes: usize,
    pub vocab_size: usize,
    pub prompts: Vec<String>,
    pub default_prompt: Option<String>,
    pub do_lower_case: bool,
    pub threads: usize,
    pub isa: &'static str,
    /// The quantization asked for at load ("none", "int8", "bf16").
    pub quantize: &'static str,
    /// What the linear layers compute in: "float32" (weights in `weights_dtype`),
    /// "int8" or "bf16"; with the kernel for the low-precision ones.
    pub precision: String,
    /// A cross-encoder's labels (`id2label`), empty for embedding models.
    pub labels: Vec<String>,
    /// The activation a cross-encoder's scores get by default ("sigmoid", …).
    pub score_activation: Option<&'static str>,
}

pub struct Model {
    tokenizer: TextTokenizer,
    backbone: Box<dyn Backbone>,
    head: Head,
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
        let isa = opts.isa.unwrap_or_else(crate::kernels::isa);
        if !isa.supported() {
            return Err(Error::Request(format!(
                "this CPU cannot run {} kernels",
                isa.name()
            )));
        }
        let st = SentenceBertConfig::read(dir)?;
        let modules = read_modules(dir)?;
        let prompts = StConfig::read(dir)?;
        let tokenizer = TextTokenizer::load(dir, st.do_lower_case)?;
        let cross = CrossEncoderConfig::detect(dir)?;
        let low = opts.quantize.kernel(isa).map_err(Error::Request)?;
        let mut loaded = arch::load(dir, isa, low)?;
        let shape = loaded.backbone.shape().clone();
        let hidden = shape.hidden_size;
        let head = match &cross {
            None => Head::Embedding(EmbeddingHead::load(dir, &modules, hidden, isa)?),
            Some(ce) => {
                let mut c = loaded.classifier(ce.labels.len())?;
                c.labels = ce.labels.clone();
                c.activation = ce.activation;
                Head::Classifier(Box::new(c))
            }
        };
        let (backbone, checkpoint) = (loaded.backbone, loaded.checkpoint);

        // sentence-transformers' limit: sentence_bert_config.json, else the
        // tokenizer's model_max_length capped at config.json's max_position_embeddings
        // (an unlimited tokenizer gets the cap); never more than the positions this
        // model can run, and lowered on request.
        let tokenizer_limit = TokenizerConfig::read(dir)?
            .max_length()
            .unwrap_or(usize::MAX);
        let configured = st
            .max_seq_length
            .unwrap_or(tokenizer_limit.min(shape.config_positions));
        let mut max_seq_length = configured.min(shape.max_positions);
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
        let size = backbone.size() + head.size();
        let (pooling, include_prompt, normalize, dense_layers) = match &head {
            Head::Embedding(h) => (
                h.pooling.modes.iter().map(|m| m.name()).collect(),
                h.pooling.include_prompt,
                h.normalize,
                h.dense_layers(),
            ),
            Head::Classifier(_) => (Vec::new(), true, false, 0),
        };
        let (labels, score_activation) = match &head {
            Head::Classifier(c) => (c.labels.clone(), Some(c.activation.name())),
            Head::Embedding(_) => (Vec::new(), None),
        };
        let info = ModelInfo {
            path: dir.to_path_buf(),
            task: match head.task() {
                Task::Embed => "embedding",
                Task::Score => "scoring",
            },
            architecture: shape.architecture,
            hidden_size: hidden,
            intermediate_size: shape.intermediate_size,
            dimensions: head.outputs(),
            layers: shape.layers,
            heads: shape.heads,
            kv_heads: shape.kv_heads,
            max_seq_length,
            weights_dtype: checkpoint.weights.storage().name(),
            pooling,
            include_prompt,
            normalize,
            dense_layers,
            parameters: size.params,
            memory_bytes: size.bytes,
            vocab_size: shape.vocab_size,
            prompts: prompts.prompts.keys().cloned().collect(),
            default_prompt: prompts.default_prompt_name.clone(),
            do_lower_case: st.do_lower_case,
            threads: pool.current_num_threads(),
            isa: isa.name(),
            quantize: opts.quantize.name(),
            precision: match low {
                None => "float32".to_string(),
                Some(k) => k.name().to_string(),
            },
            labels,
            score_activation,
        };
        Ok(Model {
            tokenizer,
            backbone,
            head,
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
        self.backbone.flops(tokens)
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

    /// Embeds already tokenized texts in one packed forward pass: what
    /// sentence-transformers' forward gives (after the model's own Normalize module,
    /// if it has one). A request's own truncation and normalization are applied by
    /// [`Model::finish`]. The result of each text does not depend on what else is in
    /// the batch.
    pub fn forward(&self, batch: &[&Tokenized]) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let shape = self.backbone.shape();
        let vocab = shape.vocab_size as u32;
        let mut ids = Vec::with_capacity(batch.iter().map(|t| t.ids.len()).sum());
        let mut seqs: Vec<Range<usize>> = Vec::with_capacity(batch.len());
        // Segments matter only to models with a segment table (ModernBERT and the
        // decoders have none and ignore them, as transformers does).
        let paired = self.backbone.type_count() > 0 && batch.iter().any(|t| t.type_ids.is_some());
        let mut types: Vec<u32> = Vec::new();
        for t in batch {
            if t.ids.len() > shape.max_positions {
                return Err(Error::Request(format!(
                    "{} tokens is more than the model's {} positions",
                    t.ids.len(),
                    shape.max_positions
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
            if paired {
                match &t.type_ids {
                    Some(ty) if ty.len() == t.ids.len() => types.extend_from_slice(ty),
                    Some(_) => {
                        return Err(Error::Request(
                            "token type ids and ids differ in length".into(),
                        ))
                    }
                    None => types.extend(std::iter::repeat_n(0, t.ids.len())),
                }
            }
        }
        if let Some(bad) = types
            .iter()
            .find(|t| **t as usize >= self.backbone.type_count())
        {
            return Err(Error::Request(format!(
                "token type {bad} is outside the model's {} segment types",
                self.backbone.type_count()
            )));
        }
        let prompt_tokens: Vec<usize> = batch.iter().map(|t| t.prompt_tokens).collect();
        let mut ws = self.workspace.lock().unwrap_or_else(|e| e.into_inner());
        let ws: &mut Workspace = &mut ws;
        let hidden = shape.hidden_size;
        let vectors = self.pool.install(|| {
            let batch = Batch::new(&ids, paired.then_some(types.as_slice()), &seqs);
            self.backbone.forward(&batch, ws);
            let states = &ws.hidden[..ids.len() * hidden];
            self.head.forward(states, hidden, &seqs, &prompt_tokens)
        });
        Ok(vectors)
    }

    /// Checks a request's output options (the task, dimensions) against the model.
    pub fn check_finish(&self, finish: &Finish) -> Result<()> {
        self.head.check(finish).map_err(Error::Request)
    }

    /// What the model serves.
    pub fn task(&self) -> Task {
        self.head.task()
    }

    /// Tokenizes (query, document) pairs as a cross-encoder reads them, cut
    /// `longest_first` to the model's limit (or `max_tokens` if lower).
    pub fn tokenize_pairs(
        &self,
        pairs: &[(&str, &str)],
        max_tokens: Option<usize>,
    ) -> Result<Vec<Tokenized>> {
        let limit = max_tokens.map_or(self.max_seq_length, |m| m.min(self.max_seq_length));
        self.tokenizer.encode_pairs(pairs, limit)
    }

    /// Scores (query, document) pairs with a cross-encoder, `batch_size` pairs per
    /// forward pass: what `CrossEncoder.predict` returns (per label).
    pub fn score(
        &self,
        pairs: &[(&str, &str)],
        finish: &Finish,
        batch_size: usize,
    ) -> Result<Vec<Vec<f32>>> {
        if batch_size == 0 {
            return Err(Error::Request("batch size must be at least 1".into()));
        }
        self.check_finish(finish)?;
        let tokens = self.tokenize_pairs(pairs, None)?;
        let mut out = Vec::with_capacity(pairs.len());
        for chunk in tokens.chunks(batch_size) {
            let refs: Vec<&Tokenized> = chunk.iter().collect();
            for mut v in self.forward(&refs)? {
                self.finish(&mut v, finish);
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Applies a request's truncation and normalization to one of `forward`'s vectors.
    pub fn finish(&self, v: &mut Vec<f32>, finish: &Finish) {
        self.head.finish(v, finish)
    }

    /// Tokenizes and embeds `texts`, `opts.batch_size` texts per forward pass, in
    /// the grouping `opts.order` asks for (longest first by default); the vectors
    /// come back in the order of `texts`.
    pub fn embed(&self, texts: &[&str], opts: &EncodeOptions) -> Result<Vec<Embedding>> {
        if opts.batch_size == 0 {
            return Err(Error::Request("batch size must be at least 1".into()));
        }
        let finish = opts.finish();
        self.check_finish(&finish)?;
        let tokens = self.tokenize(texts, opts)?;
        let order = batch_order(&tokens, opts.order);
        let mut out: Vec<Option<Embedding>> = vec![None; texts.len()];
        for chunk in order.chunks(opts.batch_size) {
            let refs: Vec<&Tokenized> = chunk.iter().map(|&i| &tokens[i]).collect();
            let vectors = self.forward(&refs)?;
            for (&i, mut vector) in chunk.iter().zip(vectors) {
                self.finish(&mut vector, &finish);
                out[i] = Some(Embedding {
                    vector,
                    tokens: tokens[i].ids.len(),
                    truncated: tokens[i].truncated,
                });
            }
        }
        Ok(out
            .into_iter()
            .map(|e| e.expect("every text is in one batch"))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_first_sorts_by_token_count_and_keeps_ties_in_order() {
        let tokens: Vec<Tokenized> = [3, 5, 1, 5, 2]
            .iter()
            .map(|&n| Tokenized::new(vec![0; n]))
            .collect();
        assert_eq!(
            batch_order(&tokens, BatchOrder::LongestFirst),
            [1, 3, 0, 4, 2]
        );
        assert_eq!(batch_order(&tokens, BatchOrder::AsGiven), [0, 1, 2, 3, 4]);
        assert!(batch_order(&[], BatchOrder::LongestFirst).is_empty());
    }
}
