//! One linear layer's speed for few rows, with its weights in cache ("hot") and
//! streamed from memory ("cold": 24 different MiniLM-sized layers in turn, 57 MB,
//! more than the L3). A short query is the cold case: each weight is read from
//! memory once and used for only a few rows. One thread, every kernel this CPU has.
//!
//! The "memory" column flushes the caches (a read of 1 GiB) before each product, as
//! an idle spell does on a shared machine: the L3 a VM reports may hold all 24
//! layers, so "cold" alone does not read from memory everywhere.
//!
//! `cargo run --release -p embgen-engine --example gemm_stream [ROWS...]` (default 4 8 16 32 96);
//! `THREADS=2` runs it on two threads (the column split of a short query).

use std::time::Instant;

use embgen_engine::kernels::{gemm::Linear, Isa};

fn main() {
    let (k, n) = (384usize, 1536usize);
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    // Written once (ones: a zeroed allocation may all be the kernel's zero page),
    // then only read, so that the timed product pays no write-backs.
    let sweep = vec![1u8; 1 << 30];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    for isa in Isa::available() {
        let layers: Vec<Linear> = (0..24)
            .map(|l| {
                let w: Vec<f32> = (0..n * k).map(|i| ((i + l) % 7) as f32 * 0.01).collect();
                Linear::new(&w, None, n, k, isa)
            })
            .collect();
        let ms: Vec<usize> = std::env::args()
            .skip(1)
            .filter_map(|a| a.parse().ok())
            .collect();
        let ms = if ms.is_empty() {
            vec![4, 8, 16, 32, 96]
        } else {
            ms
        };
        for &m in &ms {
            let x: Vec<f32> = (0..m * k).map(|i| (i % 5) as f32 * 0.01).collect();
            let mut out = vec![0f32; m * n];
            let mut row = format!("{isa:?} m={m:3}:");
            for (label, count) in [("hot", 1usize), ("cold", layers.len())] {
                let reps = 240;
                let best = pool.install(|| {
                    (0..5)
                        .map(|_| {
                            let start = Instant::now();
                            for r in 0..reps {
                                layers[r % count].forward(&x, m, &mut out, false, &|_, _| {});
                            }
                            (2 * m * k * n * reps) as f64 / start.elapsed().as_secs_f64() / 1e9
                        })
                        .fold(0.0, f64::max)
                });
                row += &format!(" {label} {best:6.1} GFLOP/s");
            }
            // From memory: every product timed alone after a sweep; the median.
            let mut times: Vec<f64> = (0..40)
                .map(|_| {
                    let sum: u64 = sweep.iter().step_by(64).map(|b| u64::from(*b)).sum();
                    std::hint::black_box(sum);
                    // Timed from inside the pool: waking its first thread after
                    // the sweep is not the product's cost.
                    pool.install(|| {
                        let start = Instant::now();
                        layers[0].forward(&x, m, &mut out, false, &|_, _| {});
                        start.elapsed().as_secs_f64()
                    })
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            row += &format!(
                " memory {:6.1} GFLOP/s ({:.1} GB/s)",
                (2 * m * k * n) as f64 / median / 1e9,
                layers[0].bytes() as f64 / median / 1e9
            );
            println!("{row}");
        }
    }
}
