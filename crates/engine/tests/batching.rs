//! Packed batches: a text's vector does not depend on its batch, and truncation is
//! reported per text.

mod common;

use common::{cosine, model, reference, MINILM, MPNET};
use embgen_engine::{BatchOrder, EncodeOptions, Tokenized};

fn independent_of_batch(id: &str, file: &str) {
    let m = model(id);
    let refs = reference(file);
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let tokens = m.tokenize(&texts, &EncodeOptions::default()).unwrap();
    let alone: Vec<Vec<f32>> = tokens
        .iter()
        .map(|t| m.forward(&[t]).unwrap().remove(0))
        .collect();
    // Every text again in batches of several sizes, in a shuffled order, so each
    // lands beside different neighbours.
    let mut order: Vec<usize> = (0..tokens.len()).collect();
    order.sort_by_key(|i| (i * 7919) % tokens.len());
    for size in [2, 7, 32, tokens.len()] {
        for chunk in order.chunks(size) {
            let batch: Vec<&Tokenized> = chunk.iter().map(|i| &tokens[*i]).collect();
            let out = m.forward(&batch).unwrap();
            for (i, v) in chunk.iter().zip(&out) {
                let c = cosine(v, &alone[*i]);
                assert!(
                    c >= 0.999999,
                    "{id}: text {i} in a batch of {size}: cosine {c}"
                );
            }
        }
    }
}

#[test]
fn minilm_vectors_do_not_depend_on_the_batch() {
    independent_of_batch(MINILM, "all-MiniLM-L6-v2.jsonl");
}

#[test]
fn mpnet_vectors_do_not_depend_on_the_batch() {
    independent_of_batch(MPNET, "all-mpnet-base-v2.jsonl");
}

#[test]
fn longest_first_batching_returns_the_input_order() {
    let m = model(MINILM);
    let refs = reference("all-MiniLM-L6-v2.jsonl");
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let embed = |order| {
        let opts = EncodeOptions {
            batch_size: 3,
            order,
            ..Default::default()
        };
        m.embed(&texts, &opts).unwrap()
    };
    // The order of the batches is unit-tested in model.rs; here, that the vectors
    // come back to their texts.
    let (sorted, given) = (embed(BatchOrder::LongestFirst), embed(BatchOrder::AsGiven));
    assert_eq!(sorted.len(), texts.len());
    assert_eq!(given.len(), texts.len());
    let lengths = m.tokenize(&texts, &EncodeOptions::default()).unwrap();
    for (i, (s, g)) in sorted.iter().zip(&given).enumerate() {
        assert_eq!(
            s.tokens,
            lengths[i].ids.len(),
            "text {i}: its own token count"
        );
        let c = cosine(&s.vector, &g.vector);
        assert!(c >= 0.999999, "text {i}: cosine {c} between the two orders");
    }
    // The texts differ in length, so the sorted batches really were different ones.
    assert!(lengths.windows(2).any(|w| w[0].ids.len() < w[1].ids.len()));
}

#[test]
fn truncation_is_reported_and_can_be_lowered() {
    let m = model(MINILM);
    let long = "word ".repeat(1000);
    let out = m
        .embed(&[long.as_str(), "short text"], &EncodeOptions::default())
        .unwrap();
    assert_eq!((out[0].tokens, out[0].truncated), (256, true));
    assert_eq!((out[1].tokens, out[1].truncated), (4, false));

    let opts = EncodeOptions {
        max_tokens: Some(16),
        ..Default::default()
    };
    let out = m.embed(&[long.as_str(), "short text"], &opts).unwrap();
    assert_eq!((out[0].tokens, out[0].truncated), (16, true));
    assert_eq!((out[1].tokens, out[1].truncated), (4, false));
    // A limit above the model's is capped at the model's.
    let opts = EncodeOptions {
        max_tokens: Some(10_000),
        ..Default::default()
    };
    assert_eq!(m.embed(&[long.as_str()], &opts).unwrap()[0].tokens, 256);
    // The last token is still [SEP] after cutting.
    let t = m
        .tokenize(&[long.as_str()], &EncodeOptions::default())
        .unwrap();
    assert_eq!(*t[0].ids.last().unwrap(), 102);
}

#[test]
fn batch_size_zero_and_bad_token_ids_are_errors_not_panics() {
    let m = model(MINILM);
    let zero = EncodeOptions {
        batch_size: 0,
        ..Default::default()
    };
    assert!(m.embed(&["a"], &zero).is_err());
    let bad = Tokenized::new(vec![101, 999_999, 102]);
    let err = m.forward(&[&bad]).unwrap_err().to_string();
    assert!(err.contains("vocabulary"), "{err}");
    let long = Tokenized::new(vec![100; 600]);
    assert!(m.forward(&[&long]).is_err());
    assert!(m.forward(&[]).unwrap().is_empty());
}
