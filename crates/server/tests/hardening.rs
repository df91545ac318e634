//! What a hostile client or a fault used to be able to do, each now a test: copies of
//! one model under many names, memory growing with distinct bad names, cross-site
//! requests acting, a panic killing a model's worker, slow clients holding
//! connections, one request holding the engine for minutes, model files reaching
//! outside their folder, and a model's files corrupted while loaded or loading.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{common, Server};

fn fixtures() -> String {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../engine/tests/fixtures/models")
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

fn loaded(s: &Server) -> Vec<String> {
    s.get("/health").json()["loaded_models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn one_copy_per_snapshot_and_revisions_that_are_refs_or_commits() {
    let s = Server::healthy(&[]);
    let info = s.get("/model/info").json();
    let commit = info["revision"].as_str().unwrap().to_string();
    let rss = s.rss_bytes();
    // Every spelling of the same snapshot shares the one copy.
    for name in [
        "all-MiniLM-L6-v2".to_string(),
        format!("{}@main", common::MINILM),
        format!("{}@{commit}", common::MINILM),
        "sentence-transformers/all-MiniLM-L6-v2".to_string(),
    ] {
        let r = s.post_json("/embeddings", &json!({"texts": ["a"], "model_name": name}));
        assert_eq!(r.status, 200, "{name}: {}", r.body);
    }
    assert_eq!(loaded(&s).len(), 1, "{:?}", loaded(&s));
    assert!(s.rss_bytes() < rss + (40 << 20), "no second copy");
    // Spellings that only pretend to be other revisions are refused before any load.
    for bad in [
        "@./main",
        "@.//main",
        &format!("@{commit}/"),
        "@main/",
        "@../main",
    ] {
        let r = s.post_json(
            "/model/load",
            &json!({"model_name": format!("{}{bad}", common::MINILM)}),
        );
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(r.code(), "invalid_model_name");
    }
}

#[test]
fn residency_limits_unload_idle_models_least_recently_used_first() {
    let dirs = fixtures();
    let s = Server::healthy(&[
        ("MODEL_DIRS", dirs.as_str()),
        ("DEFAULT_MODEL", "gte"),
        ("MAX_LOADED_MODELS", "2"),
    ]);
    let load = |name: &str| s.post_json("/model/load", &json!({"model_name": name}));
    assert_eq!(load("modernbert").status, 200);
    assert_eq!(loaded(&s).len(), 2);
    // A third evicts the least recently used idle model, never the default.
    assert_eq!(load("nomic-bert").status, 200);
    let now = loaded(&s);
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(
        now.contains(&"gte".to_string()) && now.contains(&"nomic-bert".to_string()),
        "{now:?}"
    );
    let m = s.get("/metrics").body;
    assert!(m.contains("reason=\"evicted\""), "eviction counted");
    let info = s.get("/model/info?model_name=gte").json();
    assert_eq!(info["residency"]["loaded_models"], 2);
    assert_eq!(info["residency"]["max_loaded_models"], 2);
    assert!(info["residency"]["memory_used_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn a_model_in_use_is_never_unloaded_and_a_load_that_cannot_fit_is_refused() {
    let dirs = fixtures();
    let s = Server::healthy(&[
        ("MODEL_DIRS", dirs.as_str()),
        ("DEFAULT_MODEL", "gte"),
        ("MAX_LOADED_MODELS", "2"),
    ]);
    // MiniLM busy with a long request; the default is protected: no room for a third.
    // About 50k tokens: under MAX_TOKENS_PER_REQUEST, seconds of work.
    let texts: Vec<String> = (0..250)
        .map(|i| format!("{i} {}", "many words ".repeat(100)))
        .collect();
    std::thread::scope(|scope| {
        let busy = scope.spawn(|| {
            s.post_json(
                "/embeddings",
                &json!({"texts": texts, "model_name": common::MINILM}),
            )
        });
        // Wait until the long request holds MiniLM.
        let deadline = Instant::now() + Duration::from_secs(30);
        while s
            .get(&format!("/model/info?model_name={}", common::MINILM))
            .json()["in_flight"]
            != 1
        {
            assert!(Instant::now() < deadline, "the long request never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        let r = s.post_json("/model/load", &json!({"model_name": "modernbert"}));
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.code(), "model_capacity");
        assert_eq!(
            busy.join().unwrap().status,
            200,
            "the request in flight completes"
        );
    });
    // Idle now: the same load evicts it.
    let r = s.post_json("/model/load", &json!({"model_name": "modernbert"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!loaded(&s).contains(&common::MINILM.to_string()));
    // A budget below one model's weights: refused, nothing else unloaded.
    let s = Server::healthy(&[("MODEL_MEMORY_BUDGET", "100M")]);
    let r = s.post_json("/model/load", &json!({"model_name": common::MPNET}));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(loaded(&s), vec![common::MINILM.to_string()]);
}

#[test]
fn allowed_models_lock_the_server_to_a_list() {
    let dirs = fixtures();
    let s = Server::healthy(&[
        ("MODEL_DIRS", dirs.as_str()),
        ("ALLOWED_MODELS", "sentence-transformers/*"),
    ]);
    let r = s.post_json("/embeddings", &json!({"texts": ["a"], "model_name": "gte"}));
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.code(), "model_not_allowed");
    let r = s.post_json(
        "/v1/embeddings",
        &json!({"input": "a", "model": "BAAI/bge-m3"}),
    );
    assert_eq!(r.status, 403);
    let models = s.get("/v1/models").json();
    assert!(models["data"].as_array().unwrap().iter().all(|m| m["id"]
        .as_str()
        .unwrap()
        .starts_with("sentence-transformers/")));
    // A default model outside the list stops start-up with the setting named.
    let (mut cmd, _) = support::command(&[("ALLOWED_MODELS", "BAAI/*")]);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DEFAULT_MODEL"));
}

#[test]
fn distinct_bad_names_cost_nothing() {
    let s = Server::healthy(&[]);
    // The first failure adds its series (one label for all failures); later ones none.
    let bad = |i: usize| {
        s.post_json(
            "/embeddings",
            &json!({"texts": ["a"], "model_name": format!("nobody/first-{i}")}),
        )
    };
    assert_eq!(bad(0).status, 404);
    // A scrape's own series appear from the second scrape on.
    s.get("/metrics");
    let before = s.get("/metrics").body.len();
    for i in 0..300 {
        let r = s.post_json(
            "/embeddings",
            &json!({"texts": ["a"], "model_name": format!("nobody/model-{i}")}),
        );
        assert_eq!(r.status, 404, "{}", r.body);
    }
    let m = s.get("/metrics").body;
    assert!(
        !m.contains("nobody/model-"),
        "failed names must not become labels"
    );
    // Counts grow by digits, not by lines.
    assert!(
        m.len() < before + 512,
        "metrics grew from {before} to {}",
        m.len()
    );
    assert!(m.contains("model=\"(failed)\""));
}

#[test]
fn requests_that_change_state_need_json_and_cross_site_ones_are_refused() {
    let s = Server::healthy(&[("CORS_ALLOW_ORIGINS", "https://app.example")]);
    // A "simple" cross-site request: text/plain needs no preflight.
    let r = s.post_with("/model/unload", "{}", &[("content-type", "text/plain")]);
    assert_eq!(r.status, 415, "{}", r.body);
    let r = s.post_with(
        "/embeddings",
        r#"{"texts":["a"]}"#,
        &[("content-type", "application/x-www-form-urlencoded")],
    );
    assert_eq!(r.status, 415);
    // A bodiless POST from a page elsewhere is refused by its Origin; curl (no Origin)
    // and the allowed origin pass.
    let path = format!("/model/load?model_name={}", common::MINILM);
    assert_eq!(
        s.post_with(&path, "", &[("origin", "https://evil.example")])
            .status,
        403
    );
    assert_eq!(s.post_with(&path, "", &[]).status, 200);
    assert_eq!(
        s.post_with(&path, "", &[("origin", "https://app.example")])
            .status,
        200
    );
    // Preflight names Authorization and Content-Type (a wildcard does not cover
    // Authorization in browsers).
    let r = s.request(
        "OPTIONS",
        "/embeddings",
        "",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization,content-type",
            ),
        ],
    );
    let allowed = r.headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    // Unknown routes and methods answer JSON.
    let r = s.get("/no/such/route");
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let r = s.get("/embeddings");
    assert_eq!((r.status, r.code().as_str()), (405, "method_not_allowed"));
}

#[test]
fn health_tells_only_its_status_without_the_key() {
    let s = Server::healthy(&[("API_KEY", "k-123")]);
    let r = s.get("/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "ok"}));
    let r = s.get_with("/health", &[("authorization", "Bearer k-123")]);
    assert!(r.json()["loaded_models"].is_array());
}

#[test]
fn a_panic_in_the_engine_fails_only_its_batch() {
    // "word " x 75 is 77 tokens with all-MiniLM-L6-v2: that batch panics.
    let s = Server::healthy(&[("EMBGEN_FAULT_PANIC_TOKENS", "77"), ("LOG_FORMAT", "json")]);
    let poison = "word ".repeat(75);
    let r = s.post_json("/embeddings", &json!({"texts": [poison]}));
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(r.headers.get("x-request-id").is_some());
    // The model keeps serving, before and after another failure.
    for _ in 0..3 {
        assert_eq!(
            s.post_json("/embeddings", &json!({"texts": ["fine"]}))
                .status,
            200
        );
        assert_eq!(
            s.post_json("/embeddings", &json!({"texts": [poison]}))
                .status,
            500
        );
    }
    assert!(s.logs().contains("injected fault"));
}

/// A connection that sends `data` and then waits; returns how long until the server
/// closed it (or None if it stayed open for `limit`).
fn closed_after(port: u16, data: &[u8], limit: Duration) -> Option<Duration> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(data).unwrap();
    c.set_read_timeout(Some(limit)).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(start.elapsed())
            }
            Err(_) => return None,
        }
    }
}

#[test]
fn slow_clients_are_cut_off_and_connections_are_bounded() {
    let s = Server::healthy(&[
        ("HEADER_READ_TIMEOUT", "1"),
        ("BODY_READ_TIMEOUT", "1"),
        ("MAX_CONNECTIONS", "8"),
    ]);
    let port = s.port();
    // Unfinished headers, and an idle connection.
    let t = closed_after(
        port,
        b"POST /embeddings HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(5),
    );
    assert!(
        t.is_some_and(|t| t < Duration::from_secs(3)),
        "unfinished headers held: {t:?}"
    );
    assert!(
        closed_after(port, b"", Duration::from_secs(5)).is_some(),
        "an idle connection held"
    );
    // An unfinished body gets 408.
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(b"POST /embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"texts\"").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    drop(c);
    // Past MAX_CONNECTIONS, new connections are closed at once (the closed ones
    // above have given their slots back by now).
    std::thread::sleep(Duration::from_millis(200));
    let held: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let t = closed_after(port, b"", Duration::from_secs(2));
    assert!(
        t.is_some_and(|t| t < Duration::from_millis(900)),
        "the ninth connection stayed: {t:?}"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        s.get("/health").status,
        200,
        "serving again once they close"
    );
}

#[test]
fn one_request_cannot_hold_the_engine() {
    let s = Server::healthy(&[("MAX_TOKENS_PER_REQUEST", "2000"), ("MAX_QUEUE_WAIT", "1")]);
    let long = "word ".repeat(300);
    let r = s.post_json("/embeddings", &json!({"texts": vec![long.as_str(); 10]}));
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.code(), "too_many_tokens");
    // Queue wait: once the engine's rate is known, a request that would wait more than
    // MAX_QUEUE_WAIT behind the queue is refused at once, with the queue's drain time.
    let s = Server::healthy(&[("MAX_QUEUE_WAIT", "1")]);
    let texts: Vec<String> = (0..64)
        .map(|i| format!("{i} {}", "words ".repeat(200)))
        .collect();
    assert_eq!(
        s.post_json("/embeddings", &json!({"texts": texts[..8]}))
            .status,
        200
    );
    let refused = std::thread::scope(|scope| {
        let busy: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| s.post_json("/embeddings", &json!({"texts": texts}))))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let r = s.post_json("/embeddings", &json!({"texts": texts}));
        for b in busy {
            let _ = b.join();
        }
        r
    });
    assert_eq!(refused.status, 429, "{}", refused.body);
    let wait: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait >= 1, "retry after {wait}");
}

#[test]
fn model_files_outside_their_folder_are_refused() {
    let root = std::env::temp_dir().join(format!("embgen-escape-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("sneaky");
    common::copy_minilm_to(&dir);
    std::fs::write(
        dir.join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"../../etc","type":"sentence_transformers.models.Pooling"}]"#,
    )
    .unwrap();
    let root_s = root.canonicalize().unwrap().display().to_string();
    let s = Server::healthy(&[("MODEL_DIRS", root_s.as_str())]);
    let r = s.post_json("/model/load", &json!({"model_name": "sneaky"}));
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(
        r.body.contains("not a folder inside the model folder"),
        "{}",
        r.body
    );
    // The folder's own text ("../../etc") may be quoted; where it lives may not.
    assert!(
        !r.body.contains(&root_s) && !r.body.contains("/tmp"),
        "no path leaks: {}",
        r.body
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn corrupt_files_while_loaded_and_while_loading() {
    let root = std::env::temp_dir().join(format!("embgen-corrupt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("victim");
    common::copy_minilm_to(&dir);
    let root_s = root.canonicalize().unwrap().display().to_string();
    let s = Server::healthy(&[("MODEL_DIRS", root_s.as_str())]);
    let embed = |name: &str| {
        s.post_json(
            "/embeddings",
            &json!({"texts": ["hello"], "model_name": name}),
        )
    };
    assert_eq!(embed("victim").status, 200);
    // While loaded: the weights are in memory; the files do not matter any more.
    let weights = dir.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 3]).unwrap();
    assert_eq!(embed("victim").status, 200);
    // Reloading the broken files fails cleanly; the server goes on.
    assert_eq!(
        s.post_json("/model/unload", &json!({"model_name": "victim"}))
            .status,
        200
    );
    let r = embed("victim");
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(r.code(), "model_load_failed");
    assert_eq!(embed(common::MINILM).status, 200);
    // While loading: the file is cut down and restored under the load, repeatedly.
    // Each load succeeds or fails with a clean 500; the process never dies.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let flipper = scope.spawn(|| {
            let mut cut = false;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let data = if cut {
                    &bytes[..bytes.len() / 2]
                } else {
                    &bytes[..]
                };
                let _ = std::fs::write(&weights, data);
                cut = !cut;
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        for _ in 0..10 {
            let r = embed("victim");
            assert!(
                r.status == 200 || r.code() == "model_load_failed",
                "{}: {}",
                r.status,
                r.body
            );
            let _ = s.post_json("/model/unload", &json!({"model_name": "victim"}));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        flipper.join().unwrap();
    });
    assert_eq!(embed(common::MINILM).status, 200, "still serving");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn tei_tokenize_is_admitted_and_limited_and_info_never_loads() {
    let s = Server::start(&[("PRELOAD", "false"), ("MAX_TEXTS_PER_REQUEST", "2")]);
    let info = s.get("/info").json();
    assert_eq!(info["model_id"], common::MINILM);
    assert!(loaded(&s).is_empty(), "GET /info loaded a model");
    let r = s.post_json("/tokenize", &json!({"inputs": ["a", "b", "c"]}));
    assert_eq!(r.status, 413, "{}", r.body);
}
