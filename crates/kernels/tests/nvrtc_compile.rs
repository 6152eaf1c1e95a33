//! Every `.cu` file under `kernels/` compiles with NVRTC for sm_80 and sm_90 (no GPU needed).
//!
//! Without NVRTC the test prints why it skipped; with `SCALARIZE_REQUIRE_NVRTC=1` (set by CI)
//! a missing NVRTC fails instead.

use rayon::prelude::*;
use scalarize_kernels::cuda::sources::{ALL_SOURCES, CompileFailure, compile_ptx};

fn nvrtc_required() -> bool {
    std::env::var("SCALARIZE_REQUIRE_NVRTC").is_ok_and(|v| v == "1")
}

#[test]
fn every_cu_file_is_embedded() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cu"))
        .collect();
    on_disk.sort();
    let mut embedded: Vec<String> = ALL_SOURCES.iter().map(|s| s.name.to_string()).collect();
    embedded.sort();
    assert_eq!(
        on_disk, embedded,
        "kernels/*.cu and cuda::sources::ALL_SOURCES differ: add the new file to ALL_SOURCES"
    );
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90() {
    // sm_XX: what CI promises; compute_XX: the PTX target `Gpu` uses at run time. The pairs
    // compile in parallel (NVRTC programs are independent; sequentially this took 24 s of CI).
    let pairs: Vec<_> = ALL_SOURCES
        .iter()
        .flat_map(|src| ["sm_80", "sm_90", "compute_80", "compute_90"].map(|arch| (src, arch)))
        .collect();
    let results: Vec<_> = pairs
        .par_iter()
        .map(|&(src, arch)| (src.name, arch, compile_ptx(src, arch)))
        .collect();
    let mut failures = Vec::new();
    let mut compiled = 0;
    for (name, arch, result) in results {
        match result {
            Ok(ptx) => {
                // Collected with the compile errors, so one bad file hides no other.
                if ptx.to_src().contains(".entry") {
                    compiled += 1;
                } else {
                    failures.push(format!("{name} for {arch}: PTX has no kernel entry"));
                }
            }
            Err(CompileFailure::Unavailable(why)) => {
                if nvrtc_required() {
                    panic!("SCALARIZE_REQUIRE_NVRTC=1 but NVRTC is unavailable: {why}");
                }
                eprintln!("SKIPPED every_kernel_compiles_for_sm80_and_sm90: {why}");
                return;
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!("compiled {compiled} (file, arch) pairs with NVRTC");
}

#[test]
fn a_broken_kernel_is_rejected_with_the_log() {
    use scalarize_kernels::cuda::sources::KernelSource;
    let broken = KernelSource {
        name: "broken.cu",
        text: "#include \"common.cuh\"\nextern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }\n",
    };
    match compile_ptx(&broken, "sm_80") {
        Err(CompileFailure::Rejected { log, .. }) => {
            assert!(log.contains("undefined_name"), "log: {log}")
        }
        Err(CompileFailure::Unavailable(why)) => {
            assert!(!nvrtc_required(), "NVRTC required but unavailable: {why}");
            eprintln!("SKIPPED a_broken_kernel_is_rejected_with_the_log: {why}");
        }
        Err(other) => panic!("unexpected failure: {other}"),
        Ok(_) => panic!("a kernel with an undefined name compiled"),
    }
    let unknown = KernelSource {
        name: "bad_include.cu",
        text: "#include \"missing.cuh\"\n",
    };
    assert!(matches!(
        scalarize_kernels::cuda::sources::assemble(&unknown),
        Err(CompileFailure::UnknownHeader { .. })
    ));
}
