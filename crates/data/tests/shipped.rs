//! The real data shipped in datasets/ loads with the documented counts.

use std::path::PathBuf;

use scalarize_data::readers::{digits, mnist};
use scalarize_data::{Dataset, Split};

fn datasets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../datasets")
}

fn class_counts(ds: &dyn Dataset) -> Vec<usize> {
    let mut c = vec![0; 10];
    for i in 0..ds.len() {
        c[ds.class_of(i).unwrap() as usize] += 1;
    }
    c
}

#[test]
fn shipped_mnist_counts() {
    let train = mnist::open(&datasets().join("mnist"), Split::Train).unwrap();
    let test = mnist::open(&datasets().join("mnist"), Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (8000, 2000));
    assert_eq!((train.height, train.width, train.channels), (28, 28, 1));
    assert_eq!(
        class_counts(&train),
        [801, 902, 793, 826, 784, 690, 811, 856, 755, 782]
    );
    assert_eq!(
        class_counts(&test),
        [200, 225, 198, 206, 196, 173, 203, 214, 189, 196]
    );
    // Real digits: mostly background, some full-intensity strokes, mean intensity ~0.13.
    let mean =
        train.pixels.iter().map(|&v| v as f64).sum::<f64>() / train.pixels.len() as f64 / 255.0;
    assert!((0.10..0.16).contains(&mean), "{mean}");
    assert_eq!(train.pixels.iter().max(), Some(&255));
}

#[test]
fn shipped_digits_counts() {
    let train = digits::open(&datasets().join("digits"), Split::Train).unwrap();
    let test = digits::open(&datasets().join("digits"), Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (1438, 359));
    let all: Vec<usize> = class_counts(&train)
        .iter()
        .zip(class_counts(&test))
        .map(|(a, b)| a + b)
        .collect();
    assert_eq!(all, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
    assert_eq!(
        class_counts(&test),
        [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
    );
}
