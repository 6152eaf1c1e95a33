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
    Ok(())
}
