//! Whatever text a client sends (any Unicode: control characters, lone combining
//! marks, emoji, right-to-left scripts, very long words), every tokenizer family
//! tokenizes it within the model's limit and the model embeds it to finite numbers;
//! pairs too. Nothing panics.

use std::path::PathBuf;

use embgen_engine::{EncodeOptions, Finish, LoadOptions, Model};
use proptest::prelude::*;

fn load(name: &str) -> Model {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name);
    Model::load(dir, LoadOptions::default()).unwrap()
}

thread_local! {
    /// One fixture per tokenizer type: WordPiece, Unigram (SentencePiece), byte-level
    /// BPE (Qwen), BPE with byte fallback (Gemma).
    static MODELS: Vec<Model> = ["gte", "xlm-roberta-cls", "qwen3", "gemma3", "modernbert"]
        .into_iter()
        .map(load)
        .collect();
    static RERANKER: Model = load("cross-xlmr");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_text_tokenizes_within_the_limit_and_embeds_to_finite_numbers(
        texts in prop::collection::vec(any::<String>(), 1..4),
        long in any::<bool>(),
    ) {
        // Sometimes longer than any model's limit.
        let texts: Vec<String> = if long { texts.iter().map(|t| t.repeat(60)).collect() } else { texts };
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        MODELS.with(|models| {
            for m in models {
                let out = m.embed(&refs, &EncodeOptions::default()).unwrap();
                for e in &out {
                    prop_assert!(e.tokens <= m.max_seq_length());
                    prop_assert!(e.vector.iter().all(|x| x.is_finite()));
                    prop_assert_eq!(e.vector.len(), m.dimensions());
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn any_pair_scores_to_finite_numbers(query in any::<String>(), document in any::<String>()) {
        RERANKER.with(|m| {
            let scores = m.score(&[(query.as_str(), document.as_str())], &Finish::Scores { raw: false }, 8).unwrap();
            prop_assert!(scores[0].iter().all(|x| x.is_finite() && (0.0..=1.0).contains(x)));
            Ok(())
        })?;
    }
}
