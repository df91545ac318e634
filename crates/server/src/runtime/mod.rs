//! The one path from an HTTP route to the engine, whatever the API dialect and the
//! task.
//!
//! The brief's `/embeddings`, OpenAI's `/v1/embeddings`, TEI's `/embed`, `/rerank`
//! and `/predict`, Cohere's `/v1/rerank` and Ollama's `/api/embed` differ in field
//! names and error shapes, not in what they do: admit the request (or refuse it with
//! 429 at once), find or load the model, check that it serves the task, tokenize
//! with the request's options off the engine's threads, queue the inputs for the
//! model's batcher (which merges concurrent requests into engine batches), and apply
//! the request's own finish (normalization, Matryoshka dimensions, score
//! activation) to its outputs. Every task returns its [`Usage`] (texts, tokens,
//! load, queue and compute time), from which every route gets its log fields,
//! timing headers and metrics in one place.

pub mod batcher;
pub mod registry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use embgen_engine::{
    EncodeOptions, Finish, Prompt, Task as ModelTask, TokenDetail, Tokenized, Truncation,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::metrics;
use batcher::overloaded;
use registry::{Lease, LoadedModel, Registry};

/// What a request asks the engine to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Embed,
    /// Relevance of documents to a query (a cross-encoder over pairs).
    Rerank,
    /// Label probabilities of texts or pairs.
    Classify,
    Tokenize,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Embed => "embed",
            Task::Rerank => "rerank",
            Task::Classify => "classify",
            Task::Tokenize => "tokenize",
        }
    }
}

/// What every task reports, for logs, headers and metrics.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub task: Task,
    /// Texts (or pairs) processed.
    pub texts: usize,
    /// Tokens the model saw, after truncation.
    pub tokens: usize,
    /// Inputs cut to the model's limit.
    pub truncated: usize,
    /// Loading the model, when this request had to.
    pub load: Duration,
    /// From queueing to the first engine batch.
    pub queue: Duration,
    /// Engine time of the batches that held this request's inputs.
    pub compute: Duration,
    pub total: Duration,
}

/// A task's result and where it came from.
pub struct Done<T> {
    pub model: Arc<LoadedModel>,
    pub output: T,
    pub usage: Usage,
}

/// An embedding request, after the dialect's parsing.
#[derive(Debug, Clone)]
pub struct Embed {
    pub texts: Vec<String>,
    pub normalize: bool,
    /// Refuse (413) rather than cut texts longer than the model's limit.
    pub truncate: bool,
    pub direction: Truncation,
    pub prompt: Prompt,
    /// Keep the first N dimensions (Matryoshka).
    pub dimensions: Option<usize>,
    pub batch_size: Option<usize>,
}

impl Embed {
    pub fn new(texts: Vec<String>) -> Self {
        Embed {
            texts,
            normalize: true,
            truncate: true,
            direction: Truncation::Right,
            prompt: Prompt::Default,
            dimensions: None,
            batch_size: None,
        }
    }
}

/// A reranking request: one query against documents.
#[derive(Debug, Clone)]
pub struct Rerank {
    pub query: String,
    pub documents: Vec<String>,
    /// Logits instead of the model's activation (sigmoid for one label).
    pub raw: bool,
    pub truncate: bool,
}

/// A classification request: texts, or pairs of texts.
#[derive(Debug, Clone)]
pub struct Classify {
    pub inputs: Vec<Input>,
    pub raw: bool,
    pub truncate: bool,
}

/// One input of a classifier.
#[derive(Debug, Clone)]
pub enum Input {
    Text(String),
    Pair(String, String),
}

/// Tokens of texts as a person inspects them.
#[derive(Debug, Clone)]
pub struct Tokenize {
    pub texts: Vec<String>,
    pub add_special_tokens: bool,
}

/// Limits every request is held to.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Most texts (or documents, or pairs) in one request.
    pub max_texts: usize,
    /// Most texts per engine batch; a request's own batch size is capped by it.
    pub max_batch_size: usize,
    /// Most tokens one request may carry after truncation.
    pub max_tokens: usize,
}

pub struct Runtime {
    pub registry: Arc<Registry>,
    /// One permit per engine request in progress (MAX_CONCURRENT_REQUESTS): taken
    /// before the body is read, so that refusing costs next to nothing.
    admission: Arc<Semaphore>,
    max_concurrent: usize,
    limits: RequestLimits,
}

impl Runtime {
    pub fn new(registry: Arc<Registry>, max_concurrent: usize, limits: RequestLimits) -> Self {
        Runtime {
            registry,
            admission: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            limits,
        }
    }

    /// A permit for one request, or 429 at once.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.admission.clone().try_acquire_owned().map_err(|_| {
            metrics::rejected("concurrency");
            overloaded(format!(
                "{} requests are in progress (MAX_CONCURRENT_REQUESTS); retry shortly",
                self.max_concurrent
            ))
        })
    }

    /// The model a request names, or the default; loaded if needed.
    async fn model(&self, name: Option<&str>) -> Result<(Lease, Duration), ApiError> {
        let name = name.unwrap_or(&self.registry.default_model);
        let (entry, loaded_now) = self.registry.get_or_load(name).await?;
        let load = if loaded_now {
            entry.load_time
        } else {
            Duration::ZERO
        };
        Ok((entry, load))
    }

    fn check_count(&self, n: usize, what: &str) -> Result<(), ApiError> {
        if n == 0 {
            return Err(ApiError::validation(format!(
                "there are no {what}: send at least one"
            )));
        }
        if n > self.limits.max_texts {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_texts",
                format!(
                    "{n} {what} in one request; the limit is {} (MAX_TEXTS_PER_REQUEST)",
                    self.limits.max_texts
                ),
            ));
        }
        Ok(())
    }

    pub async fn embed(
        &self,
        model: Option<&str>,
        req: Embed,
    ) -> Result<Done<Vec<Vec<f32>>>, ApiError> {
        let start = Instant::now();
        self.check_count(req.texts.len(), "texts to embed")?;
        let batch_size = match req.batch_size {
            Some(0) => return Err(ApiError::validation("batch_size must be at least 1")),
            Some(b) => b.min(self.limits.max_batch_size),
            None => self.limits.max_batch_size,
        };
        let (entry, load) = self.model(model).await?;
        let finish = Finish::Embedding {
            normalize: req.normalize,
            dimensions: req.dimensions,
        };
        serves(&entry, &finish)?;
        let opts = EncodeOptions {
            prompt: req.prompt,
            truncation: req.direction,
            ..EncodeOptions::default()
        };
        let texts = req.texts;
        let encoded = tokenize(&entry, move |m| {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            m.tokenize(&refs, &opts)
        })
        .await?;
        self.run(
            Task::Embed,
            entry,
            encoded,
            req.truncate,
            batch_size,
            finish,
            load,
            start,
        )
        .await
    }

    pub async fn rerank(
        &self,
        model: Option<&str>,
        req: Rerank,
    ) -> Result<Done<Vec<f32>>, ApiError> {
        let start = Instant::now();
        if req.query.trim().is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "empty_query",
                "query must not be empty",
            ));
        }
        self.check_count(req.documents.len(), "documents to rank")?;
        let (entry, load) = self.model(model).await?;
        let finish = Finish::Scores { raw: req.raw };
        serves(&entry, &finish)?;
        let (query, documents) = (req.query, req.documents);
        let encoded = tokenize(&entry, move |m| {
            let pairs: Vec<(&str, &str)> = documents
                .iter()
                .map(|d| (query.as_str(), d.as_str()))
                .collect();
            m.tokenize_pairs(&pairs, None)
        })
        .await?;
        let done = self
            .run(
                Task::Rerank,
                entry,
                encoded,
                req.truncate,
                self.limits.max_batch_size,
                finish,
                load,
                start,
            )
            .await?;
        // A reranker's relevance is its first label's score.
        Ok(Done {
            output: done
                .output
                .into_iter()
                .map(|v| v.first().copied().unwrap_or(f32::NAN))
                .collect(),
            model: done.model,
            usage: done.usage,
        })
    }

    pub async fn classify(
        &self,
        model: Option<&str>,
        req: Classify,
    ) -> Result<Done<Vec<Vec<f32>>>, ApiError> {
        let start = Instant::now();
        self.check_count(req.inputs.len(), "inputs to classify")?;
        let (entry, load) = self.model(model).await?;
        let finish = Finish::Probabilities { raw: req.raw };
        serves(&entry, &finish)?;
        let inputs = req.inputs;
        let encoded = tokenize(&entry, move |m| {
            // Texts and pairs may mix; each keeps its place.
            let mut out: Vec<Option<Tokenized>> = vec![None; inputs.len()];
            let (texts, pairs): (Vec<_>, Vec<_>) = inputs
                .iter()
                .enumerate()
                .partition(|(_, i)| matches!(i, Input::Text(_)));
            let text_refs: Vec<&str> = texts
                .iter()
                .map(|(_, i)| match i {
                    Input::Text(t) => t.as_str(),
                    Input::Pair(..) => unreachable!("partitioned"),
                })
                .collect();
            let pair_refs: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(_, i)| match i {
                    Input::Pair(a, b) => (a.as_str(), b.as_str()),
                    Input::Text(_) => unreachable!("partitioned"),
                })
                .collect();
            let opts = EncodeOptions {
                prompt: Prompt::None,
                ..EncodeOptions::default()
            };
            for ((i, _), t) in texts.iter().zip(m.tokenize(&text_refs, &opts)?) {
                out[*i] = Some(t);
            }
            for ((i, _), t) in pairs.iter().zip(m.tokenize_pairs(&pair_refs, None)?) {
                out[*i] = Some(t);
            }
            Ok(out
                .into_iter()
                .map(|t| t.expect("every input tokenized"))
                .collect())
        })
        .await?;
        self.run(
            Task::Classify,
            entry,
            encoded,
            req.truncate,
            self.limits.max_batch_size,
            finish,
            load,
            start,
        )
        .await
    }

    pub async fn tokenize(
        &self,
        model: Option<&str>,
        req: Tokenize,
    ) -> Result<Done<Vec<Vec<TokenDetail>>>, ApiError> {
        let start = Instant::now();
        self.check_count(req.texts.len(), "texts to tokenize")?;
        let (entry, load) = self.model(model).await?;
        let m = entry.model.clone();
        let special = req.add_special_tokens;
        let texts = req.texts;
        let details = tokio::task::spawn_blocking(move || {
            texts
                .iter()
                .map(|t| m.token_details(t, special))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|e| ApiError::validation(e.to_string()))?;
        let tokens = details.iter().map(Vec::len).sum();
        let usage = Usage {
            task: Task::Tokenize,
            texts: details.len(),
            tokens,
            truncated: 0,
            load,
            queue: Duration::ZERO,
            compute: Duration::ZERO,
            total: start.elapsed(),
        };
        metrics::processed(&entry.name, Task::Tokenize.name(), usage.texts, tokens);
        Ok(Done {
            model: Arc::clone(&entry),
            output: details,
            usage,
        })
    }

    /// Queues tokenized inputs on the model's batcher and waits for their outputs.
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        task: Task,
        entry: Lease,
        encoded: Vec<Tokenized>,
        truncate: bool,
        batch_size: usize,
        finish: Finish,
        load: Duration,
        start: Instant,
    ) -> Result<Done<Vec<Vec<f32>>>, ApiError> {
        let truncated = encoded.iter().filter(|t| t.truncated).count();
        if !truncate {
            if let Some(i) = encoded.iter().position(|t| t.truncated) {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "input_too_long",
                    format!(
                        "input {i} is longer than the model's {} tokens and truncation is off",
                        entry.model.max_seq_length()
                    ),
                ));
            }
        }
        let texts = encoded.len();
        let tokens: usize = encoded.iter().map(|t| t.ids.len()).sum();
        if tokens > self.limits.max_tokens {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_tokens",
                format!(
                    "{tokens} tokens in one request; the limit is {} (MAX_TOKENS_PER_REQUEST): \
                     split it into smaller requests",
                    self.limits.max_tokens
                ),
            ));
        }
        // If the caller is dropped (the client went away), the receiver goes with it
        // and the batcher skips the inputs not yet computed.
        let output = entry
            .batcher
            .submit(encoded, batch_size, finish)?
            .await
            .map_err(|_| ApiError::internal())??;
        metrics::processed(&entry.name, task.name(), texts, tokens);
        let usage = Usage {
            task,
            texts,
            tokens,
            truncated,
            load,
            queue: output.queue_time,
            compute: output.compute_time,
            total: start.elapsed(),
        };
        Ok(Done {
            model: Arc::clone(&entry),
            output: output.vectors,
            usage,
        })
    }
}

/// 400 unless the model serves what the request asks (an embedding model asked to
/// rerank, a reranker asked to embed), saying what the model does serve.
fn serves(entry: &LoadedModel, finish: &Finish) -> Result<(), ApiError> {
    entry.model.check_finish(finish).map_err(|e| {
        let message = e.to_string();
        let code = if message.contains("serves") {
            "wrong_model_task"
        } else {
            "invalid_dimensions"
        };
        let task = match entry.model.task() {
            ModelTask::Embed => "an embedding model",
            ModelTask::Score => "a cross-encoder (reranking and classification)",
        };
        let message = if code == "wrong_model_task" {
            format!("model {:?} is {task}; {message}", entry.name)
        } else {
            message
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    })
}

/// Tokenizes on a blocking thread: tokenizing is CPU work the async threads must not do.
async fn tokenize(
    entry: &LoadedModel,
    f: impl FnOnce(&embgen_engine::Model) -> embgen_engine::Result<Vec<Tokenized>> + Send + 'static,
) -> Result<Vec<Tokenized>, ApiError> {
    let model = entry.model.clone();
    tokio::task::spawn_blocking(move || f(&model))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "tokenizer task failed");
            ApiError::internal()
        })?
        .map_err(|e| ApiError::validation(e.to_string()))
}
