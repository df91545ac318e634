//! The quality gate for quantized models: int8 (and bf16, where the CPU has it)
//! against the same model in full precision, on sentence-transformers' reference
//! texts and on the standard workload.
//!
//! Measured: the minimum and mean cosine of each vector to its full-precision twin,
//! and top-10 nearest-neighbour agreement: every workload text is a query against all
//! the others, and the share of its ten nearest neighbours that full precision and the
//! quantized model agree on, averaged. Targets (issue 13): int8 minimum cosine ≥ 0.995
//! and agreement ≥ 0.97; bf16 minimum cosine ≥ 0.9999. Memory: int8 ≤ 30% of f32.
//!
//! The default int8 kernel and bf16 are measured on everything; every other int8
//! kernel this CPU runs (AVX2 and portable on an AVX-512 machine) on the reference
//! texts of MiniLM, since each quantizes the same way and only sums in its own order.

mod common;

use std::path::PathBuf;

use common::{model_dir, reference, MINILM, MPNET};
use embgen_engine::kernels::Isa;
use embgen_engine::{EncodeOptions, LoadOptions, Model, Quantize};

fn workload() -> Vec<String> {
    let path = std::env::var_os("EMBGEN_WORKLOAD")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/bench/workload.jsonl")
        });
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (EMBGEN_WORKLOAD overrides)", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["text"].as_str().unwrap().to_string()
        })
        .collect()
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt() as f32;
    v.iter().map(|x| x / n.max(1e-12)).collect()
}

fn embed(model: &Model, texts: &[String]) -> Vec<Vec<f32>> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let opts = EncodeOptions {
        batch_size: 32,
        ..Default::default()
    };
    model
        .embed(&refs, &opts)
        .unwrap()
        .into_iter()
        .map(|e| unit(&e.vector))
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// (min, mean) cosine of paired unit vectors.
fn cosines(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f64, f64) {
    let c: Vec<f64> = a.iter().zip(b).map(|(x, y)| dot(x, y)).collect();
    let min = c.iter().cloned().fold(f64::INFINITY, f64::min);
    (min, c.iter().sum::<f64>() / c.len() as f64)
}

/// Each vector's ten nearest others by cosine. f32 sums suffice to rank: ties closer
/// than f32 rounding are ties for a search engine too.
fn neighbours(all: &[Vec<f32>]) -> Vec<[usize; 10]> {
    (0..all.len())
        .map(|q| {
            let mut sims: Vec<(f32, usize)> = all
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != q)
                .map(|(i, v)| (all[q].iter().zip(v).map(|(x, y)| x * y).sum::<f32>(), i))
                .collect();
            sims.select_nth_unstable_by(10, |a, b| b.0.total_cmp(&a.0));
            std::array::from_fn(|k| sims[k].1)
        })
        .collect()
}

/// Mean share of each query's top-10 neighbours that both sets of vectors agree on.
fn top10_agreement(full: &[[usize; 10]], low: &[[usize; 10]]) -> f64 {
    let shared: usize = full
        .iter()
        .zip(low)
        .map(|(a, b)| a.iter().filter(|i| b.contains(i)).count())
        .sum();
    shared as f64 / (10 * full.len()) as f64
}

fn load(id: &str, quantize: Quantize, isa: Isa) -> Model {
    Model::load(
        model_dir(id),
        LoadOptions {
            quantize,
            isa: Some(isa),
            ..Default::default()
        },
    )
    .expect("model loads")
}

struct Gate {
    min_cosine: f64,
    agreement: f64,
}

const INT8: Gate = Gate {
    min_cosine: 0.995,
    agreement: 0.97,
};
const BF16: Gate = Gate {
    min_cosine: 0.9999,
    agreement: 0.99,
};

/// How much a variant is measured on.
#[derive(Clone, Copy, PartialEq)]
enum Scope {
    /// The reference texts and the whole workload, neighbours included: the gate.
    Full,
    /// The reference texts only: another kernel's summation order on the same
    /// quantized values (the kernel tests prove those products exact), kept cheap.
    Reference,
}

fn check(id: &str, file: &str, variants: &[(Quantize, Isa, Scope)]) {
    let refs: Vec<String> = reference(file).into_iter().map(|r| r.text).collect();
    let work = workload();
    let isa = embgen_engine::kernels::isa();
    let full = load(id, Quantize::None, isa);
    let (full_refs, full_work) = (embed(&full, &refs), embed(&full, &work));
    let full_neighbours = neighbours(&full_work);
    let mut failures = Vec::new();
    for &(quantize, isa, scope) in variants {
        let low = load(id, quantize, isa);
        let low_refs = embed(&low, &refs);
        let (ref_min, ref_mean) = cosines(&full_refs, &low_refs);
        let (mut work_min, mut work_mean, mut agreement) = (f64::NAN, f64::NAN, f64::NAN);
        if scope == Scope::Full {
            let low_work = embed(&low, &work);
            (work_min, work_mean) = cosines(&full_work, &low_work);
            agreement = top10_agreement(&full_neighbours, &neighbours(&low_work));
        }
        let memory = low.info().memory_bytes as f64 / full.info().memory_bytes as f64;
        let name = format!("{id} {} ({})", low.info().precision, isa.name());
        eprintln!(
            "| {name} | {ref_min:.5} | {ref_mean:.6} | {work_min:.5} | {work_mean:.6} | {agreement:.4} | {:.0}% |",
            100.0 * memory
        );
        let gate = if quantize == Quantize::Int8 {
            &INT8
        } else {
            &BF16
        };
        // NaN (not measured) never fails a gate: `<` is false for it.
        let min = if work_min.is_nan() {
            ref_min
        } else {
            ref_min.min(work_min)
        };
        if min < gate.min_cosine {
            failures.push(format!("{name}: minimum cosine {min:.5}"));
        }
        if agreement < gate.agreement {
            failures.push(format!("{name}: top-10 agreement {agreement:.4}"));
        }
        if quantize == Quantize::Int8 && memory > 0.30 {
            failures.push(format!("{name}: {:.0}% of the f32 memory", 100.0 * memory));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// int8 on this CPU's default kernel over everything; `more`: bf16 where the CPU has
/// it (over everything) and every other int8 kernel it can run (reference texts).
fn variants(more: bool) -> Vec<(Quantize, Isa, Scope)> {
    use embgen_engine::kernels::quant::LowKernel;
    let isas = Isa::available();
    let mut v = vec![(Quantize::Int8, embgen_engine::kernels::isa(), Scope::Full)];
    if !more {
        return v;
    }
    if let Some(&isa) = isas.iter().find(|i| LowKernel::bf16_for(**i).is_some()) {
        v.push((Quantize::Bf16, isa, Scope::Full));
    }
    let mut seen = vec![LowKernel::int8_for(v[0].1)];
    for &isa in &isas {
        let kernel = LowKernel::int8_for(isa);
        if !seen.contains(&kernel) {
            seen.push(kernel);
            v.push((Quantize::Int8, isa, Scope::Reference));
        }
    }
    v
}

const HEADER: &str = "| model | reference min | reference mean | workload min | workload mean | top-10 agreement | memory |";

#[test]
fn minilm_quantized_stays_faithful() {
    eprintln!("{HEADER}");
    check(MINILM, "all-MiniLM-L6-v2.jsonl", &variants(true));
}

#[test]
fn mpnet_quantized_stays_faithful() {
    eprintln!("{HEADER}");
    check(MPNET, "all-mpnet-base-v2.jsonl", &variants(false));
}
