//! End to end: `scalarize data check|stats` on the shipped data sets and a corrupt copy.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scalarize"))
        .arg("data")
        .args(args)
        .arg(dir)
        .output()
        .unwrap()
}

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("datasets")
        .join(name)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The sample count printed for `split` ("train: 123 samples").
fn count(out: &str, split: &str) -> usize {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{split}: ")) && l.contains(" samples"))
        .unwrap_or_else(|| panic!("no {split} line in\n{out}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn check_passes_on_shipped_mnist_and_digits() {
    for (name, format) in [("mnist", "mnist"), ("digits", "digits")] {
        let o = data(&["check"], &shipped(name));
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        assert!(out.contains(&format!("format {format}")), "{out}");
        assert!(count(&out, "train") > 0 && count(&out, "test") > 0, "{out}");
        assert!(out.contains("0 errors"), "{out}");
    }
}

#[test]
fn stats_on_digits_and_explicit_format() {
    let o = data(&["stats", "--format", "digits"], &shipped("digits"));
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    // scikit-learn digits: 1797 samples, stratified 80/20.
    assert_eq!(count(&out, "train") + count(&out, "test"), 1797, "{out}");
    assert!(
        count(&out, "test") > 300 && count(&out, "test") < 400,
        "{out}"
    );
    assert!(out.contains("digit: 10 classes, present 10"), "{out}");
    assert!(out.contains("per-channel mean ["), "{out}");
}

#[test]
fn stats_on_mnist_reports_classes() {
    let o = data(&["stats", "--max-images", "200"], &shipped("mnist"));
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("digit: 10 classes, present 10"), "{out}");
    assert!(out.contains("over 200 images"), "{out}");
}

#[test]
fn truncated_idx_fails_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = shipped("mnist");
    for f in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    // A raw IDX header announcing 1000 images of 28x28 with only 10 images of payload.
    let mut bytes = vec![0, 0, 8, 3];
    for d in [1000u32, 28, 28] {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend(std::iter::repeat_n(7u8, 10 * 784));
    std::fs::write(tmp.path().join("t10k-images-idx3-ubyte"), bytes).unwrap();
    let o = data(&["check"], tmp.path());
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("t10k-images-idx3-ubyte"), "{out}");
    // The intact split is still checked.
    assert!(count(&out, "train") > 0, "{out}");
}

#[test]
fn undetectable_folder_lists_formats() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("readme.txt"), "nothing").unwrap();
    let o = data(&["check"], tmp.path());
    let out = text(&o);
    assert!(!o.status.success());
    for f in [
        "cifar10",
        "cifar100",
        "stl10",
        "mnist",
        "digits",
        "domainnet",
        "celeba",
        "taskonomy",
    ] {
        assert!(out.contains(&format!("  {f}: ")), "{f} missing in\n{out}");
    }
    let o = data(&["stats"], &tmp.path().join("missing"));
    assert!(!o.status.success());
    assert!(text(&o).contains("missing"), "{}", text(&o));
}
