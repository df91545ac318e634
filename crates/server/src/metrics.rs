//! Prometheus metrics: every name, label and bucket in one place.
//!
//! Call sites use the small functions here rather than the `metrics` macros directly,
//! so that a metric's name and labels cannot drift between the places that record it.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
const BATCH_TEXTS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
const BATCH_TOKENS: &[f64] = &[
    16.0, 64.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0,
];

/// Installs the recorder once per process; later calls are no-ops.
pub fn install() {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("embgen_batch_size".into()), BATCH_TEXTS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("embgen_batch_tokens".into()), BATCH_TOKENS)
            })
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first, which we never do.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    });
}

fn describe() {
    describe_counter!("embgen_requests_total", "HTTP requests by route and status");
    describe_histogram!(
        "embgen_request_duration_seconds",
        Unit::Seconds,
        "HTTP request duration by route"
    );
    describe_histogram!(
        "embgen_queue_wait_seconds",
        Unit::Seconds,
        "Time a request waited before its first engine batch"
    );
    describe_histogram!(
        "embgen_inference_duration_seconds",
        Unit::Seconds,
        "Duration of one engine forward pass"
    );
    describe_counter!(
        "embgen_texts_total",
        "Texts (or text pairs) processed, by model and task"
    );
    describe_counter!(
        "embgen_tokens_total",
        "Tokens processed after truncation, by model and task"
    );
    describe_histogram!("embgen_batch_size", "Texts per engine batch");
    describe_histogram!("embgen_batch_tokens", "Tokens per engine batch");
    describe_gauge!("embgen_queue_depth", "Texts waiting for the engine");
    describe_gauge!("embgen_queued_tokens", "Tokens waiting for the engine");
    describe_counter!(
        "embgen_cancelled_texts_total",
        "Texts dropped because their client went away"
    );
    describe_counter!(
        "embgen_rejected_requests_total",
        "Requests refused with 429, by reason"
    );
    describe_counter!("embgen_model_loads_total", "Model loads by result");
    describe_histogram!(
        "embgen_model_load_duration_seconds",
        Unit::Seconds,
        "Model load duration"
    );
    describe_counter!(
        "embgen_model_unloads_total",
        "Model unloads, by reason (request, evicted)"
    );
    describe_gauge!("embgen_models_loaded", "Models resident in memory");
    describe_gauge!(
        "embgen_models_memory_bytes",
        Unit::Bytes,
        "Weights of all resident models"
    );
    describe_gauge!("embgen_max_loaded_models", "MAX_LOADED_MODELS");
    describe_gauge!(
        "embgen_model_memory_budget_bytes",
        Unit::Bytes,
        "MODEL_MEMORY_BUDGET"
    );
    describe_gauge!(
        "embgen_model_memory_bytes",
        Unit::Bytes,
        "Weights of each resident model, by the precision it runs in"
    );
    describe_gauge!(
        "process_resident_memory_bytes",
        Unit::Bytes,
        "Resident memory of the process"
    );
}

/// The exposition text; process figures are read now.
pub fn render() -> String {
    if let Some(rss) = crate::routes::service::rss_bytes() {
        gauge!("process_resident_memory_bytes").set(rss as f64);
    }
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

pub fn request(route: &'static str, status: u16, elapsed: Duration) {
    counter!("embgen_requests_total", "route" => route, "status" => status.to_string())
        .increment(1);
    histogram!("embgen_request_duration_seconds", "route" => route).record(elapsed.as_secs_f64());
}

/// Texts (or pairs) and tokens a task processed.
pub fn processed(model: &str, task: &'static str, texts: usize, tokens: usize) {
    counter!("embgen_texts_total", "model" => model.to_string(), "task" => task)
        .increment(texts as u64);
    counter!("embgen_tokens_total", "model" => model.to_string(), "task" => task)
        .increment(tokens as u64);
}

pub fn queue_wait(model: &str, wait: Duration) {
    histogram!("embgen_queue_wait_seconds", "model" => model.to_string())
        .record(wait.as_secs_f64());
}

pub fn batch(model: &str, texts: usize, tokens: usize, elapsed: Duration) {
    let m = model.to_string();
    histogram!("embgen_batch_size", "model" => m.clone()).record(texts as f64);
    histogram!("embgen_batch_tokens", "model" => m.clone()).record(tokens as f64);
    histogram!("embgen_inference_duration_seconds", "model" => m).record(elapsed.as_secs_f64());
}

pub fn queue_depth(model: &str, texts: usize, tokens: usize) {
    gauge!("embgen_queue_depth", "model" => model.to_string()).set(texts as f64);
    gauge!("embgen_queued_tokens", "model" => model.to_string()).set(tokens as f64);
}

pub fn cancelled_texts(model: &str, texts: usize) {
    counter!("embgen_cancelled_texts_total", "model" => model.to_string()).increment(texts as u64);
}

pub fn rejected(reason: &'static str) {
    counter!("embgen_rejected_requests_total", "reason" => reason).increment(1);
}

/// `precision` labels the memory gauge (none, int8, bf16: what QUANTIZE and
/// `/model/load?quantize=` name), so a dashboard shows which precision each resident
/// model runs in and what it costs.
pub fn model_loaded(model: &str, precision: &'static str, elapsed: Duration, memory_bytes: usize) {
    counter!("embgen_model_loads_total", "model" => model.to_string(), "result" => "ok")
        .increment(1);
    histogram!("embgen_model_load_duration_seconds", "result" => "ok")
        .record(elapsed.as_secs_f64());
    gauge!("embgen_model_memory_bytes", "model" => model.to_string(), "precision" => precision)
        .set(memory_bytes as f64);
}

/// A failed load, under one label whatever the name: distinct bad names must not
/// add series (a client could otherwise grow /metrics without bound).
pub fn model_load_failed(elapsed: Duration) {
    counter!("embgen_model_loads_total", "model" => "(failed)", "result" => "error").increment(1);
    histogram!("embgen_model_load_duration_seconds", "result" => "error")
        .record(elapsed.as_secs_f64());
}

/// `reason`: request (POST /model/unload) or evicted (to make room).
pub fn model_unloaded(model: &str, precision: &'static str, reason: &'static str) {
    counter!("embgen_model_unloads_total", "model" => model.to_string(), "reason" => reason)
        .increment(1);
    gauge!("embgen_model_memory_bytes", "model" => model.to_string(), "precision" => precision)
        .set(0.0);
}

pub fn models_loaded(n: usize, memory_bytes: usize) {
    gauge!("embgen_models_loaded").set(n as f64);
    gauge!("embgen_models_memory_bytes").set(memory_bytes as f64);
}

/// The residency limits, so dashboards can show use against them.
pub fn residency(max_models: usize, memory_budget: usize) {
    gauge!("embgen_max_loaded_models").set(max_models as f64);
    gauge!("embgen_model_memory_budget_bytes").set(memory_budget as f64);
}
