//! Merges the texts of concurrent requests into engine batches, one queue per model.
//!
//! The engine is fastest on full batches, while clients each send a few texts. Each
//! request is tokenized on its own (off the engine's threads) and queued as a job;
//! one worker thread per model takes texts from the waiting jobs round-robin, up to
//! MAX_BATCH_SIZE texts and MAX_BATCH_TOKENS tokens, runs them as one packed forward
//! pass and hands each job its own vectors. A job that still has texts goes to the
//! back of the queue, so a large request shares the engine with small ones instead of
//! holding it. A job whose client has gone is dropped before its texts are computed.
//!
//! The queue is bounded in time, not only in tokens: the worker measures its own rate
//! (tokens per second, smoothed over recent batches), and a request whose tokens would
//! wait longer than MAX_QUEUE_WAIT behind those already queued is refused at once with
//! 429 and a `Retry-After` of the queue's expected drain time, so that accepted
//! requests never wait tens of seconds. A panic inside the engine fails only the batch
//! it happened in; the worker goes on serving. Dropping a batcher signals its worker
//! and returns: the worker finishes the batch in hand and exits on its own, so no
//! thread (an async one least of all) ever waits for it.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use embgen_engine::{Finish, Model, Tokenized};
use tokio::sync::oneshot;

use crate::error::ApiError;
use crate::metrics;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most texts in one forward pass.
    pub max_batch_size: usize,
    /// Most tokens in one forward pass (a single longer text still runs alone).
    pub max_batch_tokens: usize,
    /// Most tokens waiting in the queue before new requests are refused with 429.
    pub max_queued_tokens: usize,
    /// Longest a new request's tokens may be expected to wait at the measured rate.
    pub max_queue_wait: Duration,
}

/// What a request gets back.
pub struct Output {
    pub vectors: Vec<Vec<f32>>,
    /// From queueing to the start of the job's first batch.
    pub queue_time: Duration,
    /// Time of the forward passes that held the job's texts.
    pub compute_time: Duration,
}

struct Job {
    texts: Vec<Tokenized>,
    /// Next text to schedule; everything before it is in a batch already.
    next: usize,
    /// The request's own batch_size: its most texts in one forward pass.
    per_batch: usize,
    /// What the request asks of its vectors (normalization, Matryoshka dimensions),
    /// applied by the engine's head as each vector is delivered.
    finish: Finish,
    results: Vec<Option<Vec<f32>>>,
    done: usize,
    enqueued: Instant,
    started: Option<Instant>,
    compute: Duration,
    reply: Option<oneshot::Sender<Result<Output, ApiError>>>,
}

impl Job {
    fn tokens_left(&self) -> usize {
        self.texts[self.next..].iter().map(|t| t.ids.len()).sum()
    }
    fn cancelled(&self) -> bool {
        self.reply.as_ref().is_none_or(|r| r.is_closed())
    }
}

type JobRef = Arc<Mutex<Job>>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<JobRef>,
    queued_tokens: usize,
    queued_texts: usize,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    limits: Limits,
    model_name: String,
    /// Engine throughput, tokens per second, smoothed; 0 until the first batch.
    rate: Mutex<f64>,
}

impl Shared {
    /// Seconds `tokens` take at the measured rate (None before the first batch).
    fn seconds_for(&self, tokens: usize) -> Option<f64> {
        let rate = *self.rate.lock().unwrap_or_else(|e| e.into_inner());
        (rate > 0.0).then(|| tokens as f64 / rate)
    }

    fn record(&self, tokens: usize, elapsed: Duration) {
        let measured = tokens as f64 / elapsed.as_secs_f64().max(1e-6);
        let mut rate = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        // Recent batches dominate: the rate follows the model and the load quickly.
        *rate = if *rate > 0.0 {
            0.8 * *rate + 0.2 * measured
        } else {
            measured
        };
    }
}

/// A text whose token count equals `EMBGEN_FAULT_PANIC_TOKENS` makes the engine
/// panic: a fault injected by tests of the panic containment, unset in production.
fn fault_tokens() -> Option<usize> {
    static FAULT: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *FAULT.get_or_init(|| {
        std::env::var("EMBGEN_FAULT_PANIC_TOKENS")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

pub struct Batcher {
    shared: Arc<Shared>,
}

impl Batcher {
    pub fn start(model: Arc<Model>, model_name: String, limits: Limits) -> Batcher {
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            wake: Condvar::new(),
            limits,
            model_name,
            rate: Mutex::new(0.0),
        });
        let worker_shared = shared.clone();
        // Detached: dropping the batcher signals the worker, which exits by itself.
        std::thread::Builder::new()
            .name("embgen-batcher".into())
            .spawn(move || run(worker_shared, model))
            .expect("a thread can be started");
        Batcher { shared }
    }

    /// Queues a request's texts; the receiver yields its vectors in order. Refuses at
    /// once (429) when the queue already holds MAX_QUEUED_TOKENS.
    pub fn submit(
        &self,
        texts: Vec<Tokenized>,
        per_batch: usize,
        finish: Finish,
    ) -> Result<oneshot::Receiver<Result<Output, ApiError>>, ApiError> {
        let (tx, rx) = oneshot::channel();
        let n = texts.len();
        let tokens: usize = texts.iter().map(|t| t.ids.len()).sum();
        if n == 0 {
            let _ = tx.send(Ok(Output {
                vectors: Vec::new(),
                queue_time: Duration::ZERO,
                compute_time: Duration::ZERO,
            }));
            return Ok(rx);
        }
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        // An empty queue always takes a request, so one larger than the bounds still runs.
        if q.queued_tokens > 0 {
            let drain = self.shared.seconds_for(q.queued_tokens);
            let retry = |e: ApiError| match drain {
                Some(s) => e.retry_after(s.ceil().max(1.0) as u64),
                None => e,
            };
            if q.queued_tokens + tokens > self.shared.limits.max_queued_tokens {
                metrics::rejected("queue_full");
                return Err(retry(overloaded(format!(
                    "the queue of {} is full ({} tokens waiting); retry shortly",
                    self.shared.model_name, q.queued_tokens
                ))));
            }
            let limit = self.shared.limits.max_queue_wait.as_secs_f64();
            if let Some(wait) = self.shared.seconds_for(q.queued_tokens + tokens) {
                if wait > limit {
                    metrics::rejected("queue_wait");
                    return Err(retry(overloaded(format!(
                        "{} would wait about {wait:.0} s behind {} queued tokens, more than \
                         MAX_QUEUE_WAIT ({limit:.0} s); retry later",
                        self.shared.model_name, q.queued_tokens
                    ))));
                }
            }
        }
        q.queued_tokens += tokens;
        q.queued_texts += n;
        q.jobs.push_back(Arc::new(Mutex::new(Job {
            texts,
            next: 0,
            per_batch: per_batch.max(1),
            finish,
            results: vec![None; n],
            done: 0,
            enqueued: Instant::now(),
            started: None,
            compute: Duration::ZERO,
            reply: Some(tx),
        })));
        metrics::queue_depth(&self.shared.model_name, q.queued_texts, q.queued_tokens);
        drop(q);
        self.shared.wake.notify_one();
        Ok(rx)
    }
}

pub fn overloaded(message: String) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", message)
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed = true;
        self.shared.wake.notify_all();
    }
}

/// A slice of one job's texts in a batch.
struct Part {
    job: JobRef,
    range: std::ops::Range<usize>,
}

/// Takes the next batch from the queue, waiting for work; None once closed.
fn next_batch(shared: &Shared) -> Option<Vec<Part>> {
    let limits = shared.limits;
    let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if q.closed {
            // Whatever is still queued will never run: say so rather than hang.
            for job in q.jobs.drain(..) {
                if let Some(tx) = job.lock().unwrap_or_else(|e| e.into_inner()).reply.take() {
                    let _ = tx.send(Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "model_unloaded",
                        "the model was unloaded before this request ran",
                    )));
                }
            }
            return None;
        }
        // Jobs whose clients are gone leave before they cost anything.
        let mut dropped = (0, 0);
        q.jobs.retain(|job| {
            let j = job.lock().unwrap_or_else(|e| e.into_inner());
            if j.cancelled() {
                dropped.0 += j.texts.len() - j.next;
                dropped.1 += j.tokens_left();
                false
            } else {
                true
            }
        });
        if dropped.0 > 0 {
            q.queued_texts -= dropped.0;
            q.queued_tokens -= dropped.1;
            metrics::cancelled_texts(&shared.model_name, dropped.0);
        }
        if !q.jobs.is_empty() {
            break;
        }
        q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
    }

    let mut parts = Vec::new();
    let (mut texts, mut tokens) = (0, 0);
    let mut finished = Vec::new();
    let mut rotated = Vec::new();
    for (i, job) in q.jobs.iter().enumerate() {
        if texts >= limits.max_batch_size {
            break;
        }
        let mut j = job.lock().unwrap_or_else(|e| e.into_inner());
        let start = j.next;
        let mut end = start;
        while end < j.texts.len() && end - start < j.per_batch && texts < limits.max_batch_size {
            let len = j.texts[end].ids.len();
            // The first text of a batch always goes in, however long.
            if texts > 0 && tokens + len > limits.max_batch_tokens {
                break;
            }
            texts += 1;
            tokens += len;
            end += 1;
        }
        if end == start {
            break;
        }
        j.next = end;
        j.started.get_or_insert_with(Instant::now);
        if end == j.texts.len() {
            finished.push(i);
        } else {
            rotated.push(i);
        }
        parts.push(Part {
            job: job.clone(),
            range: start..end,
        });
        if tokens >= limits.max_batch_tokens {
            break;
        }
    }
    // Fully scheduled jobs leave the queue; partly scheduled ones go to its back.
    let mut keep = VecDeque::with_capacity(q.jobs.len());
    let mut back = Vec::new();
    for (i, job) in q.jobs.drain(..).enumerate() {
        if finished.contains(&i) {
            continue;
        } else if rotated.contains(&i) {
            back.push(job);
        } else {
            keep.push_back(job);
        }
    }
    keep.extend(back);
    q.jobs = keep;
    q.queued_texts -= texts;
    q.queued_tokens -= tokens;
    metrics::queue_depth(&shared.model_name, q.queued_texts, q.queued_tokens);
    Some(parts)
}

fn run(shared: Arc<Shared>, model: Arc<Model>) {
    while let Some(parts) = next_batch(&shared) {
        forward(&shared, &model, &parts);
    }
    // An unloaded model often ends here, after its unload was answered: give its
    // weights back to the system now rather than at the next unload.
    if Arc::into_inner(model).is_some() {
        crate::runtime::registry::release_memory();
    }
}

fn forward(shared: &Shared, model: &Model, parts: &[Part]) {
    // Copy the token ids out so that no job lock is held across the forward pass.
    let inputs: Vec<Tokenized> = parts
        .iter()
        .flat_map(|p| {
            let j = p.job.lock().unwrap_or_else(|e| e.into_inner());
            j.texts[p.range.clone()].to_vec()
        })
        .collect();
    let refs: Vec<&Tokenized> = inputs.iter().collect();
    let tokens: usize = inputs.iter().map(|t| t.ids.len()).sum();
    for p in parts {
        let j = p.job.lock().unwrap_or_else(|e| e.into_inner());
        metrics::queue_wait(
            &shared.model_name,
            j.started.unwrap_or(j.enqueued) - j.enqueued,
        );
    }
    let start = Instant::now();
    // A panic in the engine must not take the worker (and every later request for the
    // model) with it: it fails this batch's requests only.
    let result = catch_unwind(AssertUnwindSafe(|| {
        if let Some(n) = fault_tokens() {
            if refs.iter().any(|t| t.ids.len() == n) {
                panic!("injected fault: a text of {n} tokens");
            }
        }
        model.forward(&refs)
    }));
    let elapsed = start.elapsed();
    metrics::batch(&shared.model_name, refs.len(), tokens, elapsed);
    let failure = match &result {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(panic) => Some(format!(
            "panic: {}",
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        )),
    };
    if let Some(error) = failure {
        tracing::error!(model = %shared.model_name, %error, texts = refs.len(), "forward pass failed; its requests get 500");
        metrics::rejected("engine_failure");
        for p in parts {
            if let Some(tx) = p.job.lock().unwrap_or_else(|e| e.into_inner()).reply.take() {
                let _ = tx.send(Err(ApiError::internal()));
            }
        }
        return;
    }
    shared.record(tokens, elapsed);
    let mut vectors = match result {
        Ok(Ok(v)) => v.into_iter(),
        _ => unreachable!("failures returned above"),
    };
    for p in parts {
        let mut j = p.job.lock().unwrap_or_else(|e| e.into_inner());
        for i in p.range.clone() {
            j.results[i] = vectors.next().map(|mut v| {
                model.finish(&mut v, &j.finish);
                v
            });
        }
        j.done += p.range.len();
        j.compute += elapsed;
        if j.done == j.texts.len() {
            if let Some(tx) = j.reply.take() {
                let output = Output {
                    vectors: j.results.drain(..).map(Option::unwrap_or_default).collect(),
                    queue_time: j.started.unwrap_or(j.enqueued) - j.enqueued,
                    compute_time: j.compute,
                };
                let _ = tx.send(Ok(output));
            }
        }
    }
}
