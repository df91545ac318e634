//! Measures what this machine can do, so benchmarks report a share of a limit measured
//! in the same run rather than a number from a data sheet.

use std::time::Instant;

use rayon::ThreadPool;

use super::gemm::Linear;

/// Independent multiply-adds on 12 vector accumulators: enough chains to cover the
/// FMA latency on two ports, so this runs at the core's peak.
fn fma_loop(iters: usize, x: f32, y: f32) -> (f32, usize) {
    #[cfg(target_arch = "x86_64")]
    if super::isa() == super::Isa::Avx512 {
        // SAFETY: the CPU has AVX-512F (checked by isa()).
        return (unsafe { fma_loop_avx512(iters, x, y) }, 16);
    }
    let mut acc = [[1f32; 4]; 12];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            for v in a.iter_mut() {
                *v = v.mul_add(x, y);
            }
        }
    }
    (acc.iter().flatten().sum(), 4)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_loop_avx512(iters: usize, x: f32, y: f32) -> f32 {
    use std::arch::x86_64::*;
    let (vx, vy) = (_mm512_set1_ps(x), _mm512_set1_ps(y));
    let mut acc = [_mm512_set1_ps(1.0); 12];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, vx, vy);
        }
    }
    acc.iter().map(|a| _mm512_reduce_add_ps(*a)).sum()
}

/// Peak f32 GFLOP/s of the pool's threads running FMAs together.
pub fn fma_peak_gflops(pool: &ThreadPool) -> f64 {
    let iters = 20_000_000;
    let x = std::hint::black_box(0.999_999f32);
    let y = std::hint::black_box(1e-7f32);
    // Warm up clocks, then take the best of three.
    let lanes = pool.broadcast(|_| std::hint::black_box(fma_loop(iters / 10, x, y)).1)[0];
    (0..3)
        .map(|_| {
            let start = Instant::now();
            pool.broadcast(|_| std::hint::black_box(fma_loop(iters, x, y)));
            let flops = (iters * 12 * lanes * 2 * pool.current_num_threads()) as f64;
            flops / start.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

/// GFLOP/s of the engine's own GEMM on a large `m × k · k × n` product: the best any
/// layer of the model can do here.
pub fn gemm_gflops(pool: &ThreadPool, m: usize, k: usize, n: usize) -> f64 {
    let weight: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 * 0.01).collect();
    let lin = Linear::from_torch(&weight, vec![0.0; n], n, k);
    let x: Vec<f32> = (0..m * k).map(|i| (i % 5) as f32 * 0.01).collect();
    let mut out = vec![0f32; m * n];
    pool.install(|| {
        lin.forward(&x, m, &mut out, false, &|_| {});
        (0..5)
            .map(|_| {
                let start = Instant::now();
                lin.forward(&x, m, &mut out, false, &|_| {});
                (2 * m * k * n) as f64 / start.elapsed().as_secs_f64() / 1e9
            })
            .fold(0.0, f64::max)
    })
}
