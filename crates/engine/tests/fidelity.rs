//! The engine reproduces sentence-transformers: the same token ids, and embeddings with
//! cosine ≥ 0.99999 for every line of the reference files.

mod common;

use common::{cosine, model, reference, MINILM, MPNET};
use embgen_engine::EncodeOptions;

fn check(id: &str, file: &str, dims: usize) {
    let model = model(id);
    let refs = reference(file);
    assert!(refs.len() >= 100, "{file}: only {} lines", refs.len());
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let opts = EncodeOptions::default();

    let tokens = model.tokenize(&texts, &opts).unwrap();
    for (r, t) in refs.iter().zip(&tokens) {
        assert_eq!(t.ids, r.input_ids, "{file}: input_ids of {:?}", r.text);
        assert_eq!(t.ids.len(), r.tokens);
    }

    let out = model.embed(&texts, &opts).unwrap();
    let mut worst = (1.0f64, "");
    for (r, e) in refs.iter().zip(&out) {
        assert_eq!(e.vector.len(), dims);
        let c = cosine(&e.vector, &r.embedding);
        if c < worst.0 {
            worst = (c, &r.text);
        }
    }
    eprintln!(
        "{file}: min cosine {:.9} ({:?})",
        worst.0,
        &worst.1[..worst.1.len().min(40)]
    );
    assert!(
        worst.0 >= 0.99999,
        "{file}: cosine {} for {:?}",
        worst.0,
        worst.1
    );
}

#[test]
fn minilm_matches_sentence_transformers() {
    check(MINILM, "all-MiniLM-L6-v2.jsonl", 384);
}

#[test]
fn mpnet_matches_sentence_transformers() {
    check(MPNET, "all-mpnet-base-v2.jsonl", 768);
}
