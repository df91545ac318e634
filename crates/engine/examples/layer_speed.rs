//! One linear layer's speed on a batch-sized block of rows, for every kernel this
//! CPU has (f32 and the low-precision ones): the kernels' share of a model's time
//! without the rest of the model around them. Two threads, as `embgen bench`.
//!
//! `cargo run --release -p embgen-engine --example layer_speed [ROWS] [NAME-FILTER]`

use std::time::Instant;

use embgen_engine::kernels::gemm::Linear;
use embgen_engine::kernels::pack::Weight;
use embgen_engine::kernels::quant::LowKernel;
use embgen_engine::kernels::Isa;

fn main() {
    let m: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2400);
    let only = std::env::args().nth(2).unwrap_or_default();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("thread pool");
    // all-MiniLM-L6-v2's layers: QKV, out, FFN up, FFN down.
    let shapes = [(384usize, 1152usize), (384, 384), (384, 1536), (1536, 384)];
    let mut layers: Vec<(String, Vec<Linear>)> = Vec::new();
    let weights: Vec<Vec<f32>> = shapes
        .iter()
        .map(|&(k, n)| {
            (0..n * k)
                .map(|i| ((i * 7919) % 251) as f32 / 251.0 - 0.5)
                .collect()
        })
        .collect();
    for isa in Isa::available() {
        let f32s = shapes
            .iter()
            .zip(&weights)
            .map(|(&(k, n), w)| Linear::new(w, None, n, k, isa))
            .collect();
        layers.push((format!("f32 {}", isa.name()), f32s));
    }
    for kernel in LowKernel::available() {
        let isa = kernel.isa();
        let low = shapes
            .iter()
            .zip(&weights)
            .map(|(&(k, n), w)| Linear::low(Weight::F32(w), None, n, k, isa, kernel))
            .collect();
        layers.push((kernel.name().to_string(), low));
    }
    for (name, set) in layers.iter().filter(|(name, _)| name.contains(&only)) {
        let mut row = format!("{name:20} m={m}:");
        let mut total_macs = 0.0;
        let mut total_s = 0.0;
        for (lin, &(k, n)) in set.iter().zip(&shapes) {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 13) % 97) as f32 / 97.0 - 0.3)
                .collect();
            let mut out = vec![0f32; m * n];
            let best = pool.install(|| {
                (0..25)
                    .map(|_| {
                        let start = Instant::now();
                        for _ in 0..4 {
                            lin.forward(&x, m, &mut out, false, &|_, _| {});
                        }
                        start.elapsed().as_secs_f64() / 4.0
                    })
                    .fold(f64::MAX, f64::min)
            });
            let macs = (m * k * n) as f64;
            total_macs += macs;
            total_s += best;
            row += &format!(" {k}x{n} {:5.1}", macs / best / 1e9);
        }
        println!("{row}  all {:5.1} G MAC/s", total_macs / total_s / 1e9);
    }
}
