//! Shared by the engine's integration tests: the real models, resolved through the
//! Hugging Face cache as users' models are, and sentence-transformers' reference output.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use embgen_engine::{LoadOptions, Model};

pub const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";
pub const MPNET: &str = "sentence-transformers/all-mpnet-base-v2";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The test cache `scripts/fetch-test-models.sh` fills.
pub fn hf_home() -> PathBuf {
    std::env::var_os("EMBGEN_HF_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/hf"))
}

pub fn model_dir(id: &str) -> PathBuf {
    let opts = embgen_hub::HubOptions {
        hf_home: Some(hf_home()),
        offline: true,
        ..Default::default()
    };
    match embgen_hub::resolve_hub(id, &opts) {
        Ok(r) => r.dir,
        Err(e) => panic!("{e}\nrun scripts/fetch-test-models.sh first"),
    }
}

/// Copies the files of all-MiniLM-L6-v2 that sentence-transformers reads into `dst`,
/// for tests that edit or break a model folder.
pub fn copy_minilm_to(dst: &std::path::Path) {
    let src = model_dir(MINILM);
    std::fs::create_dir_all(dst.join("1_Pooling")).unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "1_Pooling/config.json",
    ] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
}

/// Models loaded so far in this test binary, by id.
type Loaded = std::sync::Mutex<Vec<(String, Arc<Model>)>>;

/// Each model is loaded once per test binary.
pub fn model(id: &str) -> Arc<Model> {
    static MODELS: OnceLock<Loaded> = OnceLock::new();
    let mut models = MODELS.get_or_init(Default::default).lock().unwrap();
    if let Some((_, m)) = models.iter().find(|(n, _)| n == id) {
        return m.clone();
    }
    let m = Arc::new(Model::load(model_dir(id), LoadOptions::default()).expect("model loads"));
    models.push((id.to_string(), m.clone()));
    m
}

pub struct Reference {
    pub text: String,
    pub tokens: usize,
    pub input_ids: Vec<u32>,
    pub embedding: Vec<f32>,
}

pub fn reference(file: &str) -> Vec<Reference> {
    let dir = std::env::var_os("EMBGEN_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/reference"));
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            Reference {
                text: v["text"].as_str().unwrap().to_string(),
                tokens: v["tokens"].as_u64().unwrap() as usize,
                input_ids: v["input_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect(),
                embedding: v["embedding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect(),
            }
        })
        .collect()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}
