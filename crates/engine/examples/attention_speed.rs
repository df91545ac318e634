//! Attention's speed alone (scores, softmax, context) for one head of one text, at
//! the lengths a workload has, on every kernel this CPU has: the part of a small
//! model's time that is not its linear layers. One thread; the share of the FMA
//! peak is per core. The products run each listed instruction set, and so does the
//! softmax on AVX-512; on the others the softmax is the portable loop compiled for
//! the process's own instruction set (`EMBGEN_ISA=avx2` in the environment lowers
//! it, as `--isa avx2` does for a model).
//!
//! `cargo run --release -p embgen-engine --example attention_speed [HEAD-DIM] [ISA-FILTER]`
//! `LENS=75,128` measures only those lengths; `SCALE` (default 2,000,000) sets the
//! work per measurement as repetitions × length², larger for a profile.

use std::time::Instant;

use embgen_engine::kernels::attention::{attend, Head, Scratch, Span};
use embgen_engine::kernels::{probe, Isa};

fn main() {
    let d: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(32);
    let only = std::env::args().nth(2).unwrap_or_default();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("thread pool");
    for isa in Isa::available()
        .into_iter()
        .filter(|i| i.name().contains(&only))
    {
        let peak = probe::fma_peak_gflops(&one, isa);
        let mut row = format!("{:8} d={d} (peak {peak:.0} GFLOP/s):", isa.name());
        for len in std::env::var("LENS")
            .map(|v| {
                v.split(',')
                    .map(|x| x.parse().unwrap())
                    .collect::<Vec<usize>>()
            })
            .unwrap_or(vec![16usize, 48, 75, 128, 256])
        {
            // A fused QKV matrix for 12 heads, as MiniLM's layers hand it over.
            let ld = 3 * 12 * d;
            let data: Vec<f32> = (0..len * ld)
                .map(|i| ((i * 7919) % 251) as f32 / 251.0 - 0.5)
                .collect();
            let mut out = vec![0f32; len * d];
            let head = Head {
                q: data.as_ptr(),
                k: data[12 * d..].as_ptr(),
                v: data[24 * d..].as_ptr(),
                ld,
                out: out.as_mut_ptr(),
                ldo: d,
                len,
                d,
            };
            let mut scratch = Scratch::default();
            let reps = (std::env::var("SCALE")
                .map(|v| v.parse().unwrap())
                .unwrap_or(2_000_000usize)
                / (len * len))
                .max(4);
            let best = (0..15)
                .map(|_| {
                    let start = Instant::now();
                    for _ in 0..reps {
                        // SAFETY: the isa is this CPU's; q, k and v hold len rows of
                        // d floats at stride ld, and out len rows of d.
                        unsafe { attend(isa, &head, 0.17, Span::FULL, None, &mut scratch) };
                    }
                    start.elapsed().as_secs_f64() / reps as f64
                })
                .fold(f64::MAX, f64::min);
            let flops = 4.0 * (len * len * d) as f64;
            let gflops = flops / best / 1e9;
            row += &format!(
                "  {len}: {:.2} us {gflops:.0} GF/s {:.0}%",
                best * 1e6,
                100.0 * gflops / peak
            );
        }
        println!("{row}");
    }
}
