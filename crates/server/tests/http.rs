//! The brief's API over real HTTP on 127.0.0.1, against the real all-MiniLM-L6-v2
//! resolved offline from a Hugging Face cache, as a user's server would resolve it.

mod support;

use serde_json::{json, Value};
use support::common::{cosine, reference, MINILM};
use support::{vectors, Server};

#[test]
fn embeddings_match_sentence_transformers() {
    let s = Server::healthy(&[]);
    let refs = reference("all-MiniLM-L6-v2.jsonl");
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let r = s.post_json("/embeddings", &json!({ "texts": texts }));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["model_name"], MINILM);
    assert_eq!(v["dimensions"], 384);
    assert_eq!(v["total_texts"], refs.len());
    assert!(v["processing_time"].as_f64().unwrap() > 0.0);
    let got = vectors(&v);
    assert_eq!(got.len(), refs.len());
    for (r, e) in refs.iter().zip(&got) {
        let c = cosine(e, &r.embedding);
        assert!(c >= 0.99999, "cosine {c} for {:?}", r.text);
    }

    // The short name, a batch size of 1 and normalize=false name the same model and,
    // since all-MiniLM-L6-v2 ends in a Normalize module, give the same unit vectors.
    let r = s.post_json(
        "/embeddings",
        &json!({ "texts": &texts[..5], "model_name": "all-MiniLM-L6-v2", "batch_size": 1, "normalize": false }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["model_name"], MINILM);
    for (a, b) in vectors(&r.json()).iter().zip(&got) {
        assert!(cosine(a, b) >= 0.999999);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
}

#[test]
fn service_routes_and_docs() {
    let s = Server::healthy(&[]);
    let root = s.get("/");
    assert_eq!(root.status, 200);
    let v = root.json();
    assert_eq!(v["name"], "embgen");
    assert_eq!(v["docs"], "/docs");
    assert_eq!(v["loaded_models"], json!([MINILM]));

    let h = s.get("/health").json();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["model_loaded"], true);
    assert_eq!(h["model_name"], MINILM);

    let spec = s.get("/openapi.json");
    assert_eq!(spec.status, 200);
    let paths = spec.json()["paths"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect::<Vec<_>>();
    for p in [
        "/",
        "/health",
        "/embeddings",
        "/model/info",
        "/model/load",
        "/model/unload",
    ] {
        assert!(paths.iter().any(|k| k == p), "{p} missing from {paths:?}");
    }
    // Both UIs and their assets come from the binary itself.
    let docs = s.get("/docs/");
    assert_eq!(docs.status, 200);
    assert!(
        docs.body.to_lowercase().contains("swagger"),
        "{}",
        &docs.body[..200.min(docs.body.len())]
    );
    let init = s.get("/docs/swagger-initializer.js");
    assert_eq!(init.status, 200);
    assert!(init.body.contains("/openapi.json"));
    let redoc = s.get("/redoc");
    assert_eq!(redoc.status, 200);
    assert!(redoc.body.contains("spec-url=\"/openapi.json\""));
    let js = s.get("/redoc/redoc.standalone.js");
    assert_eq!(js.status, 200);
    assert!(js.body.len() > 500_000);

    let info = s.get("/model/info");
    assert_eq!(info.status, 200);
    let i = info.json();
    assert_eq!(i["model_name"], MINILM);
    assert_eq!(i["dimensions"], 384);
    assert_eq!(i["max_seq_length"], 256);
    assert_eq!(i["architecture"], "bert");
    assert_eq!(i["pooling"], json!(["mean"]));
    assert_eq!(i["source"], "hub-cache");
    assert!(i["revision"].as_str().is_some_and(|r| r.len() == 40));
    assert!(i["parameters"].as_u64().unwrap() > 22_000_000);
    assert!(i["memory_bytes"].as_u64().unwrap() > 80_000_000);
    assert!(i["load_time_seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn request_errors_are_json_with_codes() {
    let s = Server::healthy(&[
        ("MAX_TEXTS_PER_REQUEST", "4"),
        ("MAX_REQUEST_BYTES", "4096"),
    ]);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "empty texts",
            json!({"texts": []}).to_string(),
            422,
            "validation_error",
        ),
        (
            "missing texts",
            json!({"model_name": "x"}).to_string(),
            422,
            "validation_error",
        ),
        (
            "non-string item",
            json!({"texts": ["a", 5]}).to_string(),
            422,
            "validation_error",
        ),
        (
            "texts not a list",
            json!({"texts": "a"}).to_string(),
            422,
            "validation_error",
        ),
        (
            "zero batch",
            json!({"texts": ["a"], "batch_size": 0}).to_string(),
            422,
            "validation_error",
        ),
        (
            "too many texts",
            json!({"texts": ["a", "b", "c", "d", "e"]}).to_string(),
            413,
            "too_many_texts",
        ),
        (
            "body too large",
            json!({"texts": ["x".repeat(5000)]}).to_string(),
            413,
            "payload_too_large",
        ),
        (
            "malformed JSON",
            "{\"texts\": [\"a\"".to_string(),
            400,
            "invalid_json",
        ),
        ("not JSON", "texts=a".to_string(), 400, "invalid_json"),
        (
            "unknown model",
            json!({"texts": ["a"], "model_name": "nobody/no-such-model"}).to_string(),
            404,
            "model_not_found",
        ),
        (
            "path traversal",
            json!({"texts": ["a"], "model_name": "../../etc"}).to_string(),
            400,
            "invalid_model_name",
        ),
        (
            "absolute path",
            json!({"texts": ["a"], "model_name": "/etc"}).to_string(),
            400,
            "invalid_model_name",
        ),
    ];
    for (what, body, status, code) in cases {
        let r = s.post("/embeddings", &body);
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert_eq!(r.code(), code, "{what}");
        assert!(
            !r.body.contains(".cache") && !r.body.contains("/root"),
            "{what} leaks a path: {}",
            r.body
        );
    }
    let r = s.get("/model/info?model_name=nobody/not-loaded");
    assert_eq!((r.status, r.code().as_str()), (404, "model_not_loaded"));
    let r = s.post("/model/unload?model_name=nobody/not-loaded", "");
    assert_eq!((r.status, r.code().as_str()), (404, "model_not_loaded"));
    let r = s.post("/model/load?model_name=nobody/no-such-model", "");
    assert_eq!((r.status, r.code().as_str()), (404, "model_not_found"));
    let r = s.get("/no/such/route");
    assert_eq!(r.status, 404);
    // The server is still fine.
    assert_eq!(
        s.post_json("/embeddings", &json!({"texts": ["still here"]}))
            .status,
        200
    );
}

/// A copy of all-MiniLM-L6-v2 under MODEL_DIRS, optionally broken.
fn local_model(root: &std::path::Path, name: &str, break_it: impl Fn(&std::path::Path)) {
    let dst = root.join(name);
    support::common::copy_minilm_to(&dst);
    break_it(&dst);
}

#[test]
fn local_models_and_a_corrupt_one() {
    let root = std::env::temp_dir().join(format!("embgen-model-dirs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    local_model(&root, "good", |_| {});
    local_model(&root, "bad-config", |d| {
        let cfg = std::fs::read_to_string(d.join("config.json")).unwrap();
        std::fs::write(
            d.join("config.json"),
            cfg.replace("\"hidden_size\": 384", "\"hidden_size\": \"big\""),
        )
        .unwrap();
    });
    local_model(&root, "bad-weights", |d| {
        let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
        std::fs::write(d.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    });
    let s = Server::healthy(&[("MODEL_DIRS", root.to_str().unwrap())]);

    let r = s.post_json(
        "/embeddings",
        &json!({"texts": ["hello"], "model_name": "good"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["model_name"], "good");
    let abs = root.join("good");
    let r = s.post_json("/model/load", &json!({"model_name": abs.to_str().unwrap()}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "already_loaded");
    assert_eq!(r.json()["model"]["source"], "local");

    for (name, field) in [
        ("bad-config", "hidden_size"),
        ("bad-weights", "model.safetensors"),
    ] {
        let r = s.post_json(
            "/embeddings",
            &json!({"texts": ["hello"], "model_name": name}),
        );
        assert_eq!(r.status, 500, "{}", r.body);
        assert_eq!(r.code(), "model_load_failed");
        assert!(r.body.contains(field), "{name}: {}", r.body);
        assert!(
            !r.body.contains(root.to_str().unwrap()),
            "leaks the path: {}",
            r.body
        );
    }
    // The others keep serving.
    assert_eq!(
        s.post_json("/embeddings", &json!({"texts": ["a"]})).status,
        200
    );
    assert_eq!(
        s.post_json(
            "/embeddings",
            &json!({"texts": ["a"], "model_name": "good"})
        )
        .status,
        200
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_revision_pins_the_snapshot() {
    let s = Server::healthy(&[]);
    let refs = support::common::hf_home()
        .join("hub/models--sentence-transformers--all-MiniLM-L6-v2/refs/main");
    let rev = std::fs::read_to_string(refs).unwrap();
    for name in [
        format!("all-MiniLM-L6-v2@{rev}"),
        "sentence-transformers/all-MiniLM-L6-v2@main".to_string(),
    ] {
        let r = s.post_json(
            "/embeddings",
            &json!({"texts": ["pinned"], "model_name": name}),
        );
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        // The snapshot the default model already holds: served by that one copy.
        assert_eq!(r.json()["model_name"], MINILM, "{name}");
        let info = s.get(&format!("/model/info?model_name={name}")).json();
        assert_eq!(info["revision"], rev.as_str());
    }
    let r = s.post_json(
        "/embeddings",
        &json!({"texts": ["x"], "model_name": "all-MiniLM-L6-v2@no-such-branch"}),
    );
    assert_eq!((r.status, r.code().as_str()), (404, "model_not_found"));
}

#[test]
fn load_and_unload_give_memory_back() {
    let s = Server::healthy(&[]);
    let before = s.rss_bytes();
    let r = s.post(
        "/model/load?model_name=sentence-transformers/all-mpnet-base-v2",
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "loaded");
    assert_eq!(r.json()["model"]["dimensions"], 768);
    let r = s.post_json(
        "/embeddings",
        &json!({"texts": ["memory test"], "model_name": "all-mpnet-base-v2"}),
    );
    assert_eq!(r.json()["dimensions"], 768);
    let loaded = s.rss_bytes();
    assert!(loaded > before + 300_000_000, "RSS {before} -> {loaded}");
    let listed = s.get("/").json()["loaded_models"].as_array().unwrap().len();
    assert_eq!(listed, 2);

    let r = s.post_json(
        "/model/unload",
        &json!({"model_name": "sentence-transformers/all-mpnet-base-v2"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["memory_freed_bytes"].as_u64().unwrap() > 400_000_000);
    // The memory goes back when the model's batcher lets go of it: at once on a quiet
    // machine, later when other tests' servers keep both cores busy.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut after = s.rss_bytes();
    while after + 300_000_000 >= loaded && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        after = s.rss_bytes();
    }
    assert!(
        after + 300_000_000 < loaded,
        "RSS did not fall: {before} -> {loaded} -> {after}"
    );
    assert_eq!(s.get("/").json()["loaded_models"], json!([MINILM]));
    // Unloading the default model, then using it again, loads it again.
    assert_eq!(s.post("/model/unload", "").status, 200);
    assert_eq!(s.get("/health").json()["model_loaded"], false);
    assert_eq!(
        s.post_json("/embeddings", &json!({"texts": ["back"]}))
            .status,
        200
    );
    assert_eq!(s.get("/health").json()["model_loaded"], true);
}

#[test]
fn request_ids_logs_and_cors() {
    let s = Server::healthy(&[
        ("LOG_FORMAT", "json"),
        ("CORS_ALLOW_ORIGINS", "https://app.example"),
    ]);
    let r = s.get_with(
        "/health",
        &[
            ("x-request-id", "my-id-42"),
            ("origin", "https://app.example"),
        ],
    );
    assert_eq!(r.headers["x-request-id"], "my-id-42");
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example"
    );
    let r = s.get_with("/health", &[("origin", "https://evil.example")]);
    assert!(r.headers.get("access-control-allow-origin").is_none());
    assert!(r.headers["x-request-id"].len() >= 16);

    let r = s.post_json("/embeddings", &json!({"texts": ["one", "two words"]}));
    let id = r.headers["x-request-id"].to_str().unwrap().to_string();
    let line = s
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["request_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no log line for {id}: {}", s.logs()));
    assert_eq!(line["route"], "/embeddings");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["status"], 200);
    assert_eq!(line["texts"], 2);
    assert_eq!(line["tokens"], 2 + 1 + 2 + 2);
    assert!(line["ms"].as_f64().is_some());
}

#[test]
fn wildcard_cors_answers_preflight() {
    // Empty variables (as env files and compose write them) mean "default".
    let s = Server::start(&[
        ("PRELOAD", "false"),
        ("THREADS", ""),
        ("MAX_SEQUENCE_LENGTH", ""),
    ]);
    let r = s.get_with("/", &[("origin", "https://anywhere.example")]);
    assert_eq!(r.headers["access-control-allow-origin"], "*");
    // Without preloading the server is healthy at once and loads on first use.
    let h = s.get("/health");
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["model_loaded"], false);
    assert_eq!(
        s.post_json("/embeddings", &json!({"texts": ["lazy"]}))
            .status,
        200
    );
    assert_eq!(s.get("/health").json()["model_loaded"], true);
}

#[test]
fn health_is_503_when_the_default_model_cannot_load() {
    let s = Server::start(&[("DEFAULT_MODEL", "nobody/missing-model")]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let h = s.get("/health");
        if h.json()["status"] == "error" {
            assert_eq!(h.status, 503);
            assert!(h.json()["message"]
                .as_str()
                .unwrap()
                .contains("nobody/missing-model"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", h.body);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn sigterm_stops_cleanly() {
    let s = Server::healthy(&[]);
    let status = s.terminate();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn bad_settings_stop_startup_naming_the_setting() {
    for (var, value) in [
        ("PORT", "eighty"),
        ("MAX_BATCH_SIZE", "0"),
        ("MAX_TEXTS_PER_REQUEST", "-3"),
        ("LOG_FORMAT", "xml"),
        ("PRELOAD", "maybe"),
        ("MODEL_DIRS", "/no/such/folder"),
        ("CORS_ALLOW_ORIGINS", "not-an-origin"),
        ("HOST", "not-an-ip"),
    ] {
        let (mut cmd, _) = support::command(&[(var, value)]);
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{var}={value} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "{var}={value}: {err}");
    }
}
