//! `scalarize devices`: what this machine can compute on.

use anyhow::Result;

/// SIMD instruction-set extensions relevant to the CPU kernels, as detected at run time.
fn simd_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut found = Vec::new();
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        macro_rules! probe {
            ($($f:tt),*) => { $( if std::arch::is_x86_feature_detected!($f) { found.push($f); } )* };
        }
        probe!(
            "sse2",
            "sse4.1",
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512vnni",
            "avx512bf16"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => { $( if std::arch::is_aarch64_feature_detected!($f) { found.push($f); } )* };
        }
        probe!("neon", "fp16", "sve", "sve2");
    }
    found
}

/// The CPU's marketing name from `/proc/cpuinfo`, where the OS offers one.
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Prints the CPU and CUDA devices.
pub fn run() -> Result<()> {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let features = simd_features();
    println!("cpu: {}", cpu_name());
    println!("  arch: {}", std::env::consts::ARCH);
    println!(
        "  simd: {}",
        if features.is_empty() {
            "none detected".to_string()
        } else {
            features.join(" ")
        }
    );
    println!(
        "  threads: {} (compute pool: {})",
        logical,
        rayon::current_num_threads()
    );
    print_cuda();
    Ok(())
}

/// Prints the CUDA libraries found and each device; a machine without CUDA is a normal answer.
fn print_cuda() {
    use scalarize_kernels::cuda;
    let libs = cuda::library_status();
    let found = |b: bool| if b { "found" } else { "not found" };
    if !libs.driver {
        println!("cuda: no CUDA driver found");
        return;
    }
    println!(
        "cuda: driver found, nvrtc {}, cublas {}",
        found(libs.nvrtc),
        found(libs.cublas)
    );
    match cuda::devices() {
        Ok(devs) if devs.is_empty() => println!("  no CUDA device"),
        Ok(devs) => {
            for d in devs {
                println!(
                    "  [{}] {}: compute capability {}.{}, {:.1} GiB, {} SMs",
                    d.ordinal,
                    d.name,
                    d.compute_capability.0,
                    d.compute_capability.1,
                    d.total_memory as f64 / (1u64 << 30) as f64,
                    d.multiprocessors
                );
            }
        }
        Err(e) => println!("  unavailable: {e}"),
    }
}
