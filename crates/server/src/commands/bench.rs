//! `embgen bench`: throughput on the standard workload, as a share of this machine's limit.
//!
//! Figures from a noisy shared machine mean little alone, so the command first measures
//! the machine itself (FMA peak, and the engine's GEMM on a large product) and reports
//! every row as a share of those, measured in the same run.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use embgen_engine::kernels::probe;
use embgen_engine::{BatchOrder, EncodeOptions, Model};

use super::EngineArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Models to measure (Hub ids or folders).
    #[arg(long = "model", default_values = ["sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-mpnet-base-v2"])]
    pub models: Vec<String>,
    /// JSONL with a "text" field per line.
    #[arg(long, default_value = "../shared/bench/workload.jsonl")]
    pub workload: PathBuf,
    /// Only the first N texts of the workload.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    pub batch_sizes: Vec<usize>,
    /// Runs of the single-query latency probe.
    #[arg(long, default_value_t = 200)]
    pub latency_runs: usize,
    /// Runs of the same query with the caches flushed before each (0: skip): what a
    /// query costs after the server sat idle while other work took the caches. The
    /// flush reads a buffer of twice the last-level cache (at most 1 GiB) held for
    /// the whole bench; with fewer than 100 runs the p99 is the slowest run.
    #[arg(long, default_value_t = 30)]
    pub cold_runs: usize,
    /// For cross-encoders (rerankers): times one query against this many workload
    /// documents is scored per batch size.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Precisions to measure, each model once per entry: none (as stored), int8,
    /// bf16. `--quantize none,int8` puts int8 rows beside full precision.
    #[arg(long, value_delimiter = ',', default_value = "none", value_parser = embgen_engine::Quantize::parse)]
    pub quantize: Vec<embgen_engine::Quantize>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

fn read_workload(args: &Args) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(&args.workload)
        .with_context(|| format!("cannot read {}", args.workload.display()))?;
    let mut texts = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("workload line {}", n + 1))?;
        let Some(t) = v["text"].as_str() else {
            bail!("workload line {}: no \"text\"", n + 1)
        };
        texts.push(t.to_string());
    }
    if let Some(limit) = args.limit {
        texts.truncate(limit);
    }
    Ok(texts)
}

struct Row {
    texts: usize,
    tokens: usize,
    seconds: f64,
    flops: f64,
}

fn run_once(model: &Model, texts: &[&str], batch: usize, order: BatchOrder) -> anyhow::Result<Row> {
    let opts = EncodeOptions {
        batch_size: batch,
        order,
        ..Default::default()
    };
    let start = Instant::now();
    let out = model.embed(texts, &opts)?;
    let seconds = start.elapsed().as_secs_f64();
    Ok(Row {
        texts: out.len(),
        tokens: out.iter().map(|e| e.tokens).sum(),
        seconds,
        flops: out.iter().map(|e| model.flops(e.tokens)).sum(),
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let texts = read_workload(&args)?;
    let load = args.engine.load_options()?;
    let pool = load.pool.clone().expect("load_options sets a pool");
    let threads = pool.current_num_threads();
    let isa = load.isa.unwrap_or_else(embgen_engine::kernels::isa);
    println!(
        "# embgen bench: {} texts from {}, {threads} threads, kernels {}",
        texts.len(),
        args.workload.display(),
        isa.name()
    );
    println!("# cpu: {}", embgen_engine::kernels::cpu_description());
    let peak = probe::fma_peak_gflops(&pool, isa);
    let gemm = probe::gemm_gflops(&pool, isa, 2048, 384, 1536);
    println!("# machine: FMA peak {peak:.0} GFLOP/s; engine GEMM 2048x384x1536 {gemm:.0} GFLOP/s ({:.0}% of peak)\n", 100.0 * gemm / peak);

    let hub = embgen_hub::HubOptions::from_env();
    if args
        .quantize
        .iter()
        .any(|q| !matches!(q, embgen_engine::Quantize::None))
    {
        // Both probes are f32: an int8 or bf16 row's share is its speed against
        // what f32 could reach here, and goes past 100% where it beats that.
        println!("# int8 and bf16 rows: shares of the f32 FMA peak and GEMM (their operations counted as f32's)\n");
    }
    println!("| model | order | batch | texts | tokens | s | texts/s | tokens/s | GFLOP/s | % FMA peak | % GEMM |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut latencies = Vec::new();
    // One sweep buffer for every model and precision, made at the first cold run.
    let mut sweep: Option<CacheSweep> = None;
    let runs = args
        .models
        .iter()
        .flat_map(|m| args.quantize.iter().map(move |q| (m, *q)));
    for (name, quantize) in runs {
        let opts = embgen_engine::LoadOptions {
            quantize,
            ..load.clone()
        };
        let loaded = crate::loader::load(name, &hub, opts)?;
        let model = &loaded.model;
        let base = name
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(name);
        let short = match quantize {
            embgen_engine::Quantize::None => base.to_string(),
            q => format!("{base} ({q})"),
        };
        let short = short.as_str();
        if model.task() == embgen_engine::Task::Score {
            rerank(model, short, &texts, &args)?;
            continue;
        }
        let set: Vec<&str> = texts.iter().map(String::as_str).collect();
        run_once(model, &set[..set.len().min(64)], 32, BatchOrder::AsGiven)?; // warm up
        for &batch in &args.batch_sizes {
            // "sorted" is the engine's own longest-first batching, what `embed` and
            // the Python package do (and sentence-transformers).
            let orders = [
                ("file", BatchOrder::AsGiven),
                ("sorted", BatchOrder::LongestFirst),
            ];
            for (order, how) in orders {
                let r = run_once(model, &set, batch, how)?;
                let gflops = r.flops / r.seconds / 1e9;
                println!(
                    "| {short} | {order} | {batch} | {} | {} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0}% | {:.0}% |",
                    r.texts, r.tokens, r.seconds,
                    r.texts as f64 / r.seconds, r.tokens as f64 / r.seconds,
                    gflops, 100.0 * gflops / peak, 100.0 * gflops / gemm,
                );
            }
        }
        let warm = query_latency(model, &texts, args.latency_runs, None)?;
        let cold = match args.cold_runs {
            0 => None,
            runs => {
                let sweep = sweep.get_or_insert_with(CacheSweep::new);
                Some(query_latency(model, &texts, runs, Some(sweep))?)
            }
        };
        latencies.push((short.to_string(), warm, cold));
    }
    println!();
    for (name, (p50, p99), cold) in latencies {
        println!("# {name}: one 16-token query, batch 1: p50 {p50:.2} ms, p99 {p99:.2} ms");
        if let Some((p50, p99)) = cold {
            println!("# {name}: one 16-token query from memory (caches flushed before each), batch 1: p50 {p50:.2} ms, p99 {p99:.2} ms");
        }
    }
    Ok(())
}

/// Documents one query is ranked against: a typical retrieve-then-rerank depth.
const RERANK_DOCUMENTS: usize = 100;

/// Reranking: the first workload text as the query, the next 100 as documents, every
/// pair scored `repeats` times per batch size (as `CrossEncoder.predict` in the
/// sentence-transformers baseline's `--rerank` mode).
fn rerank(model: &Model, short: &str, texts: &[String], args: &Args) -> anyhow::Result<()> {
    if texts.len() <= RERANK_DOCUMENTS {
        bail!("reranking needs {} workload texts", RERANK_DOCUMENTS + 1);
    }
    let pairs: Vec<(&str, &str)> = texts[1..=RERANK_DOCUMENTS]
        .iter()
        .map(|d| (texts[0].as_str(), d.as_str()))
        .collect();
    let finish = embgen_engine::Finish::Scores { raw: false };
    model.score(&pairs, &finish, 32)?; // warm up
    println!("\n| model | rerank | batch | pairs | s | pairs/s |");
    println!("|---|---|---:|---:|---:|---:|");
    for &batch in &args.batch_sizes {
        let start = Instant::now();
        for _ in 0..args.repeats.max(1) {
            model.score(&pairs, &finish, batch)?;
        }
        let seconds = start.elapsed().as_secs_f64();
        let n = pairs.len() * args.repeats.max(1);
        println!(
            "| {short} | rerank | {batch} | {n} | {seconds:.2} | {:.0} |",
            n as f64 / seconds
        );
    }
    Ok(())
}

/// Evicts what the process had in the CPU caches by reading a buffer twice the
/// size of the last-level cache, as other work does to an idle server's weights. The
/// buffer is written once, when made, and only read before each run: a sweep of
/// writes would leave the caches full of modified lines, and the timed query would
/// pay for writing them back. The timed run then also wakes the pool's threads, as
/// a query after an idle spell does.
struct CacheSweep {
    buffer: Vec<u8>,
}

/// Size assumed when the last-level cache cannot be read from sysfs: more than
/// the L3 of most servers' slices.
const FALLBACK_LAST_LEVEL_CACHE: usize = 256 << 20;

/// The largest sweep: a VM may report its host's whole L3, and the bench should not
/// take more than this much memory beside the model.
const MAX_SWEEP: usize = 1 << 30;

impl CacheSweep {
    fn new() -> Self {
        let bytes = (2 * last_level_cache().unwrap_or(FALLBACK_LAST_LEVEL_CACHE)).min(MAX_SWEEP);
        // Ones, not zeros: a zeroed allocation may be pages the kernel has not
        // given yet, all reading the same zero page.
        CacheSweep {
            buffer: vec![1; bytes],
        }
    }

    fn run(&self) {
        // One load per cache line brings every line of the buffer in.
        let sum: u64 = self.buffer.iter().step_by(64).map(|b| u64::from(*b)).sum();
        std::hint::black_box(sum);
    }
}

/// Bytes of the largest CPU cache Linux reports for cpu0.
fn last_level_cache() -> Option<usize> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    dir.filter_map(|e| cache_bytes(&std::fs::read_to_string(e.ok()?.path().join("size")).ok()?))
        .max()
}

/// A sysfs cache size ("48K", "491520K", "32M") in bytes.
fn cache_bytes(size: &str) -> Option<usize> {
    let size = size.trim();
    let (digits, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit())?);
    let scale = match unit {
        "K" => 1 << 10,
        "M" => 1 << 20,
        _ => return None,
    };
    Some(digits.parse::<usize>().ok()? * scale)
}

/// Median and 99th percentile of embedding one 16-token text on its own, with the
/// caches flushed before each run when `sweep` is given (the sweep is not timed).
fn query_latency(
    model: &Model,
    texts: &[String],
    runs: usize,
    sweep: Option<&CacheSweep>,
) -> anyhow::Result<(f64, f64)> {
    let opts = EncodeOptions {
        max_tokens: Some(16),
        batch_size: 1,
        ..Default::default()
    };
    // A text long enough to be cut at exactly 16 tokens.
    let text = texts
        .iter()
        .find(|t| t.split_whitespace().count() > 30)
        .context("the workload has no text of 30 words")?;
    let tokens = model.tokenize(&[text], &opts)?;
    let one = [&tokens[0]];
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        if let Some(sweep) = sweep {
            sweep.run();
        }
        let start = Instant::now();
        model.forward(&one)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok((at(0.5), at(0.99)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_as_sysfs_writes_them() {
        assert_eq!(cache_bytes("48K\n"), Some(48 << 10));
        assert_eq!(cache_bytes("491520K"), Some(480 << 20));
        assert_eq!(cache_bytes("32M"), Some(32 << 20));
        for bad in ["", "K", "12", "12G", "x4K"] {
            assert_eq!(cache_bytes(bad), None, "{bad:?}");
        }
    }
}
