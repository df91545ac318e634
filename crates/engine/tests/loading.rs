//! Model folders: every sentence-transformers file is honoured, and anything missing or
//! unsupported fails with an error naming the file and the field.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{copy_minilm_to, cosine, model, MINILM};
use embgen_engine::{EncodeOptions, Error, LoadOptions, Model, Prompt};

/// A copy of all-MiniLM-L6-v2 in a fresh folder, for editing.
fn copy_minilm(name: &str) -> Folder {
    let dst = std::env::temp_dir().join(format!("embgen-loading-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    copy_minilm_to(&dst);
    Folder(dst)
}

/// A scratch model folder, removed when the test is done with it: each holds 88 MB
/// of weights, and left behind they added 2 GB to the temp folder per run.
struct Folder(PathBuf);

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for Folder {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

fn load(dir: &Path) -> Result<Model, Error> {
    Model::load(dir, LoadOptions::default())
}

fn assert_names(err: Error, file: &str, field: &str) {
    let msg = err.to_string();
    assert!(
        msg.contains(file) && msg.contains(field),
        "expected {file} and {field} in: {msg}"
    );
}

#[test]
fn missing_and_unsupported_files_name_file_and_field() {
    let d = copy_minilm("missing-tokenizer");
    std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    assert_names(load(&d).err().unwrap(), "tokenizer.json", "not found");

    let d = copy_minilm("bad-act");
    edit_json(&d.join("config.json"), |v| v["hidden_act"] = "mish".into());
    assert_names(load(&d).err().unwrap(), "config.json", "hidden_act");

    let d = copy_minilm("bad-type");
    edit_json(&d.join("config.json"), |v| {
        v["num_hidden_layers"] = "six".into()
    });
    assert_names(load(&d).err().unwrap(), "config.json", "num_hidden_layers");

    let d = copy_minilm("no-field");
    edit_json(&d.join("config.json"), |v| {
        v.as_object_mut().unwrap().remove("hidden_size");
    });
    assert_names(load(&d).err().unwrap(), "config.json", "hidden_size");

    let d = copy_minilm("arch");
    edit_json(&d.join("config.json"), |v| v["model_type"] = "t5".into());
    assert_names(load(&d).err().unwrap(), "config.json", "model_type");

    let d = copy_minilm("module");
    edit_json(&d.join("modules.json"), |v| {
        v.as_array_mut().unwrap().push(serde_json::json!({"idx": 3, "name": "3", "path": "3_X", "type": "sentence_transformers.models.WordWeights"}))
    });
    assert_names(load(&d).err().unwrap(), "modules.json", "[3].type");

    let d = copy_minilm("pooling");
    edit_json(&d.join("1_Pooling/config.json"), |v| {
        v["pooling_mode"] = "median".into()
    });
    assert_names(
        load(&d).err().unwrap(),
        "1_Pooling/config.json",
        "pooling_mode",
    );

    let d = copy_minilm("shape");
    edit_json(&d.join("config.json"), |v| {
        v["intermediate_size"] = 1000.into()
    });
    assert_names(
        load(&d).err().unwrap(),
        "model.safetensors",
        "intermediate.dense.weight",
    );

    let d = copy_minilm("weights");
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    assert_names(load(&d).err().unwrap(), "model.safetensors", "not found");

    let d = copy_minilm("prompt");
    edit_json(&d.join("config_sentence_transformers.json"), |v| {
        v["default_prompt_name"] = "query".into()
    });
    assert_names(
        load(&d).err().unwrap(),
        "config_sentence_transformers.json",
        "default_prompt_name",
    );
}

/// Pooling modes are checked by their relations to mean pooling, whose output the
/// fidelity tests pin to sentence-transformers'.
#[test]
fn pooling_modes_from_legacy_and_new_fields() {
    let text = "Pooling turns token vectors into one sentence vector.";
    let base = model(MINILM)
        .embed(&[text], &EncodeOptions::default())
        .unwrap()
        .remove(0)
        .vector;

    // The newer single field gives the same as the legacy booleans.
    let d = copy_minilm("pooling-mode");
    edit_json(&d.join("1_Pooling/config.json"), |v| {
        v["pooling_mode_mean_tokens"] = false.into();
        v["pooling_mode"] = "mean".into();
    });
    let v = load(&d)
        .unwrap()
        .embed(&[text], &EncodeOptions::default())
        .unwrap()
        .remove(0)
        .vector;
    assert!(cosine(&v, &base) > 0.9999999);

    // cls + mean concatenate, cls first; without Normalize the mean half is the raw mean.
    let d = copy_minilm("cls-mean");
    edit_json(&d.join("1_Pooling/config.json"), |v| {
        v["pooling_mode_cls_token"] = true.into()
    });
    edit_json(&d.join("modules.json"), |v| {
        v.as_array_mut().unwrap().truncate(2);
    });
    let m = load(&d).unwrap();
    assert_eq!(m.dimensions(), 768);
    assert_eq!(m.info().pooling, vec!["cls", "mean"]);
    let raw = EncodeOptions {
        normalize: false,
        ..Default::default()
    };
    let v = m.embed(&[text], &raw).unwrap().remove(0).vector;
    assert!(cosine(&v[384..], &base) > 0.9999999);
    assert!(cosine(&v[..384], &base) < 0.99);

    // mean_sqrt_len = mean * sqrt(n): same direction, different length.
    let d = copy_minilm("sqrt");
    edit_json(&d.join("1_Pooling/config.json"), |v| {
        v["pooling_mode_mean_tokens"] = false.into();
        v["pooling_mode_mean_sqrt_len_tokens"] = true.into();
    });
    edit_json(&d.join("modules.json"), |v| {
        v.as_array_mut().unwrap().truncate(2);
    });
    let m = load(&d).unwrap();
    let sqrt = m.embed(&[text], &raw).unwrap().remove(0);
    assert!(cosine(&sqrt.vector, &base) > 0.9999999);
    for mode in ["max", "lasttoken", "weightedmean", "cls"] {
        let d = copy_minilm(&format!("mode-{mode}"));
        edit_json(&d.join("1_Pooling/config.json"), |v| {
            v["pooling_mode_mean_tokens"] = false.into();
            v["pooling_mode"] = mode.into();
        });
        let v = load(&d)
            .unwrap()
            .embed(&[text], &EncodeOptions::default())
            .unwrap()
            .remove(0)
            .vector;
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{mode}: norm {norm}");
        assert!(cosine(&v, &base) < 0.999, "{mode} gave the mean");
    }
}

#[test]
fn prompts_and_include_prompt() {
    let d = copy_minilm("prompts");
    edit_json(&d.join("config_sentence_transformers.json"), |v| {
        v["prompts"] = serde_json::json!({"query": "query: ", "passage": "passage: "});
        v["default_prompt_name"] = "query".into();
    });
    let m = load(&d).unwrap();
    let base = model(MINILM);
    let text = "what is a packed batch";
    let with_default = m
        .embed(&[text], &EncodeOptions::default())
        .unwrap()
        .remove(0);
    let literal = EncodeOptions {
        prompt: Prompt::Text("query: ".into()),
        ..Default::default()
    };
    let by_hand = base.embed(&[text], &literal).unwrap().remove(0);
    assert!(cosine(&with_default.vector, &by_hand.vector) > 0.9999999);
    // "query:" is two tokens; the prompt adds them to the count.
    assert_eq!(
        with_default.tokens,
        base.embed(&[text], &EncodeOptions::default()).unwrap()[0].tokens + 2
    );
    let none = EncodeOptions {
        prompt: Prompt::None,
        ..Default::default()
    };
    let plain = m.embed(&[text], &none).unwrap().remove(0);
    assert!(cosine(&plain.vector, &with_default.vector) < 0.9999);
    let unknown = EncodeOptions {
        prompt: Prompt::Named("nope".into()),
        ..Default::default()
    };
    assert!(m
        .embed(&[text], &unknown)
        .unwrap_err()
        .to_string()
        .contains("nope"));

    // include_prompt = false pools over the text's tokens only: the [CLS] and "query :"
    // rows are left out, so the result differs from pooling everything.
    edit_json(&d.join("1_Pooling/config.json"), |v| {
        v["include_prompt"] = false.into()
    });
    let excl = load(&d)
        .unwrap()
        .embed(&[text], &EncodeOptions::default())
        .unwrap()
        .remove(0);
    assert!(cosine(&excl.vector, &with_default.vector) < 0.99999);
    assert!(cosine(&excl.vector, &with_default.vector) > 0.8);
}

#[test]
fn dense_module_projects_the_pooled_vector() {
    let d = copy_minilm("dense");
    edit_json(&d.join("modules.json"), |v| {
        let a = v.as_array_mut().unwrap();
        a.insert(2, serde_json::json!({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}));
    });
    std::fs::create_dir_all(d.join("2_Dense")).unwrap();
    std::fs::write(
        d.join("2_Dense/config.json"),
        r#"{"in_features": 384, "out_features": 4, "bias": true, "activation_function": "torch.nn.modules.activation.Tanh"}"#,
    )
    .unwrap();
    // Four outputs: tanh of input 0, input 1 plus 0.5, minus input 2, and a sum.
    let mut w = vec![0f32; 4 * 384];
    w[0] = 1.0;
    w[384 + 1] = 1.0;
    w[2 * 384 + 2] = -1.0;
    for i in 0..384 {
        w[3 * 384 + i] = 0.01;
    }
    let b = [0.0f32, 0.5, 0.0, 0.0];
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (wb, bb) = (bytes(&w), bytes(&b));
    let tensors = HashMap::from([
        (
            "linear.weight".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4, 384], &wb)
                .unwrap(),
        ),
        (
            "linear.bias".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &bb).unwrap(),
        ),
    ]);
    safetensors::serialize_to_file(tensors, None, &d.join("2_Dense/model.safetensors")).unwrap();

    let text = "dense layers follow pooling";
    let m = load(&d).unwrap();
    assert_eq!(m.dimensions(), 4);
    let raw = EncodeOptions {
        normalize: false,
        ..Default::default()
    };
    // Modules run in order (Pooling, Dense, Normalize), so the expected vector is the
    // raw mean, projected by hand, then normalized.
    let mean_dir = copy_minilm("dense-ref");
    edit_json(&mean_dir.join("modules.json"), |v| {
        v.as_array_mut().unwrap().truncate(2);
    });
    let pooled = load(&mean_dir)
        .unwrap()
        .embed(&[text], &raw)
        .unwrap()
        .remove(0)
        .vector;
    let mut want = vec![
        pooled[0].tanh(),
        (pooled[1] + 0.5).tanh(),
        (-pooled[2]).tanh(),
        (pooled.iter().sum::<f32>() * 0.01).tanh(),
    ];
    let norm = want.iter().map(|x| x * x).sum::<f32>().sqrt();
    want.iter_mut().for_each(|x| *x /= norm);
    let got = m.embed(&[text], &raw).unwrap().remove(0).vector;
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
    }
}
