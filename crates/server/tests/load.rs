//! Dynamic batching under concurrent load, back-pressure, metrics and shutdown, over
//! real HTTP on 127.0.0.1.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use support::common::cosine;
use support::{vectors, Server};

fn workload(n: usize) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/bench/workload.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .take(n)
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Parses Prometheus text: every sample line is `name{labels} value`.
fn samples(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = key.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if let Some(labels) = key.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line:?}"
            );
        }
        out.insert(key.to_string(), value);
    }
    out
}

fn sum(m: &HashMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn concurrent_requests_get_exactly_their_own_vectors() {
    let s = Server::healthy(&[("MAX_BATCH_SIZE", "16"), ("MAX_BATCH_TOKENS", "2048")]);
    let texts = workload(80);
    // Each text alone first: the reference each mixed response must match.
    let alone: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| vectors(&s.post_json("/embeddings", &json!({"texts": [t]})).json()).remove(0))
        .collect();
    let before = samples(&s.get("/metrics").body);

    std::thread::scope(|scope| {
        for client in 0..24usize {
            let (s, texts, alone) = (&s, &texts, &alone);
            scope.spawn(move || {
                for round in 0..6usize {
                    // A different mix of texts, sizes and batch sizes per request.
                    let n = 1 + (client * 7 + round * 3) % 9;
                    let idx: Vec<usize> = (0..n)
                        .map(|i| (client * 13 + round * 29 + i * 17) % texts.len())
                        .collect();
                    let batch: Vec<&str> = idx.iter().map(|i| texts[*i].as_str()).collect();
                    let r = s.post_json(
                        "/embeddings",
                        &json!({"texts": batch, "batch_size": 1 + client % 4}),
                    );
                    assert_eq!(r.status, 200, "{}", r.body);
                    assert!(r.headers.contains_key("x-queue-time-ms"));
                    assert!(r.headers.contains_key("x-compute-time-ms"));
                    let got = vectors(&r.json());
                    assert_eq!(got.len(), idx.len());
                    for (v, i) in got.iter().zip(&idx) {
                        let c = cosine(v, &alone[*i]);
                        assert!(
                            c >= 0.999999,
                            "client {client} round {round}: text {i} cosine {c}"
                        );
                    }
                }
            });
        }
    });

    let after = samples(&s.get("/metrics").body);
    let batches = sum(&after, "embgen_batch_size_count") - sum(&before, "embgen_batch_size_count");
    let texts_in_batches =
        sum(&after, "embgen_batch_size_sum") - sum(&before, "embgen_batch_size_sum");
    assert!(batches > 0.0);
    // 24 clients at once: requests were merged, so batches hold more than one request's texts.
    assert!(
        texts_in_batches / batches > 1.5,
        "mean batch {}",
        texts_in_batches / batches
    );
}

#[test]
fn over_the_limits_only_429_with_retry_after() {
    let s = Server::healthy(&[
        ("MAX_CONCURRENT_REQUESTS", "2"),
        ("MAX_QUEUED_TOKENS", "4000"),
    ]);
    let texts = workload(64);
    let statuses = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for client in 0..12 {
            let (s, texts, statuses) = (&s, &texts, &statuses);
            scope.spawn(move || {
                let batch = &texts[(client * 5) % 32..(client * 5) % 32 + 32];
                let r = s.post_json("/embeddings", &json!({"texts": batch}));
                if r.status == 429 {
                    assert_eq!(r.headers["retry-after"], "1");
                    assert_eq!(r.code(), "overloaded");
                } else {
                    assert_eq!(r.status, 200, "{}", r.body);
                }
                statuses.lock().unwrap().push(r.status);
            });
        }
    });
    let statuses = statuses.into_inner().unwrap();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    let m = samples(&s.get("/metrics").body);
    assert!(sum(&m, "embgen_rejected_requests_total") >= 1.0);
    // Once the load is gone the server answers again.
    assert_eq!(
        s.post_json("/embeddings", &json!({"texts": ["after"]}))
            .status,
        200
    );
}

#[test]
fn metrics_parse_and_move() {
    let s = Server::healthy(&[]);
    let before = samples(&s.get("/metrics").body);
    let r = s.post_json("/embeddings", &json!({"texts": ["one", "two", "three"]}));
    assert_eq!(r.status, 200);
    let text = s.get("/metrics").body;
    assert!(
        text.contains("# TYPE embgen_requests_total counter"),
        "{text}"
    );
    assert!(text.contains("# TYPE embgen_inference_duration_seconds histogram"));
    let after = samples(&text);
    let key = "embgen_requests_total{route=\"/embeddings\",status=\"200\"}";
    assert_eq!(after[key] - before.get(key).copied().unwrap_or(0.0), 1.0);
    assert_eq!(
        sum(&after, "embgen_texts_total") - sum(&before, "embgen_texts_total"),
        3.0
    );
    assert_eq!(
        sum(&after, "embgen_tokens_total") - sum(&before, "embgen_tokens_total"),
        9.0
    );
    assert!(sum(&after, "embgen_batch_tokens_count") > sum(&before, "embgen_batch_tokens_count"));
    assert!(sum(&after, "embgen_queue_wait_seconds_count") >= 1.0);
    assert!(sum(&after, "embgen_request_duration_seconds_count") >= 2.0);
    assert_eq!(sum(&after, "embgen_model_loads_total"), 1.0);
    assert_eq!(sum(&after, "embgen_models_loaded"), 1.0);
    assert!(sum(&after, "embgen_model_memory_bytes") > 80e6);
    assert!(sum(&after, "process_resident_memory_bytes") > 50e6);
    assert!(after.keys().any(|k| k.starts_with("embgen_queue_depth")));
    // Unload shows too.
    assert_eq!(s.post("/model/unload", "").status, 200);
    let m = samples(&s.get("/metrics").body);
    assert_eq!(sum(&m, "embgen_model_unloads_total"), 1.0);
    assert_eq!(sum(&m, "embgen_models_loaded"), 0.0);
}

#[test]
fn a_disconnected_clients_texts_are_dropped() {
    let s = Server::healthy(&[("MAX_BATCH_SIZE", "8")]);
    let texts = workload(400);
    let long: Vec<&str> = texts
        .iter()
        .filter(|t| t.len() > 400)
        .map(String::as_str)
        .take(120)
        .collect();
    std::thread::scope(|scope| {
        // Keeps the engine busy for a while.
        let busy = scope.spawn(|| s.post_json("/embeddings", &json!({"texts": long})));
        std::thread::sleep(Duration::from_millis(100));
        // Gives up after 300 ms, long before its 120 texts could be done.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(300)))
            .build()
            .into();
        let gave_up = agent
            .post(format!("{}/embeddings", s.base))
            .header("content-type", "application/json")
            .send(json!({"texts": long}).to_string());
        assert!(gave_up.is_err(), "the client should have timed out");
        assert_eq!(busy.join().unwrap().status, 200);
    });
    let m = samples(&s.get("/metrics").body);
    assert!(
        sum(&m, "embgen_cancelled_texts_total") > 0.0,
        "nothing was dropped"
    );
    assert!(sum(&m, "embgen_texts_total") < 2.0 * long.len() as f64);
}

#[test]
fn sigterm_finishes_requests_in_flight() {
    let s = Server::healthy(&[]);
    let texts = workload(300);
    let batch: Vec<&str> = texts.iter().map(String::as_str).collect();
    std::thread::scope(|scope| {
        let inflight = scope.spawn(|| s.post_json("/embeddings", &json!({"texts": batch})));
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: plain kill(2) on the server process.
        unsafe { libc::kill(s.pid() as i32, libc::SIGTERM) };
        let r = inflight.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["total_texts"], 300);
    });
    assert!(s.terminate().success());
}
