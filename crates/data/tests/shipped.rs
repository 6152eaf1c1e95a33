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

/// The README's two-domain setup on the shipped data, and MultiMNIST built from it.
#[test]
fn shipped_two_domains_and_multimnist_through_the_loader() {
    use scalarize_data::readers::MultiMnist;
    use scalarize_data::transforms::Interp;
    use scalarize_data::{Augment, DomainSampler, Loader, LoaderConfig, Source, Target, TaskBatch};
    let m = mnist::open(&datasets().join("mnist"), Split::Test).unwrap();
    let d = digits::open(&datasets().join("digits"), Split::Test).unwrap();
    let norm = Augment {
        mean: vec![0.13],
        std: vec![0.31],
        pad: 2,
        crop: Some((28, 28)),
        flip: false,
        ..Default::default()
    };
    let up = Augment {
        resize: Some((28, 28, Interp::Bilinear)),
        ..norm.clone()
    };
    let loader = Loader::new(
        vec![Source::new(m.clone(), norm), Source::new(d, up)],
        LoaderConfig {
            batch_size: 32,
            workers: 2,
            seed: 5,
            ..Default::default()
        },
    )
    .unwrap();
    let sampler = DomainSampler::new(&[0.5, 0.5], 3).unwrap();
    let batches: Vec<_> = loader
        .epoch_sampled(0, &sampler)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(batches.len(), 3);
    for b in &batches {
        assert_eq!(b.shape, [32, 1, 28, 28]);
        assert!(b.images.iter().all(|v| v.is_finite()));
        let TaskBatch::Class { labels, mask } = &b.targets[0] else {
            panic!()
        };
        assert!(labels.iter().all(|&l| l < 10) && mask.iter().all(|&m| m));
    }
    let mm = MultiMnist::new(m, 100, 0, Some(28)).unwrap();
    let s = mm.get(3).unwrap();
    assert_eq!((s.image.height, s.image.width), (28, 28));
    let (a, b, _, _) = mm.layout(3);
    assert_eq!(s.targets[0], Some(Target::Class(mm.class_of(3).unwrap())));
    assert!(a == 3 && b < 2000);
}
