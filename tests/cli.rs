//! End-to-end tests of the `scalarize` binary's utility commands.

use std::process::Command;

fn scalarize(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_scalarize"))
        .args(args)
        .output()
        .expect("the scalarize binary runs")
}

#[test]
fn version_names_the_package_version() {
    let out = scalarize(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        format!("scalarize {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn devices_lists_the_cpu_and_a_cuda_answer() {
    let out = scalarize(&["devices"]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("cpu: "), "{text}");
    let threads = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("threads: "))
        .expect("a threads line");
    let n: usize = threads.split_whitespace().next().unwrap().parse().unwrap();
    assert!(n >= 1);
    let cuda = text
        .lines()
        .find(|l| l.starts_with("cuda: "))
        .expect("a cuda line");
    assert!(
        cuda == "cuda: no CUDA driver found" || cuda.starts_with("cuda: driver found"),
        "{cuda}"
    );
}

#[test]
fn unknown_command_is_an_error_not_a_panic() {
    let out = scalarize(&["frobnicate"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("frobnicate"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
