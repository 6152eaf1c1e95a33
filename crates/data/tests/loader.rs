//! Loader: determinism across thread counts, shuffling, drop-last, multi-domain batches with
//! task masks, and the domain sampler's ratios against p.

use scalarize_data::sample::InMemory;
use scalarize_data::{
    Augment, Batch, Dataset, DomainSampler, Loader, LoaderConfig, Source, TaskBatch, TaskSpec,
};

fn synthetic(n: usize, h: usize, w: usize, c: usize, task: &str, seed: usize) -> InMemory {
    InMemory {
        height: h,
        width: w,
        channels: c,
        pixels: (0..n * h * w * c)
            .map(|i| ((i * 37 + seed * 11) % 256) as u8)
            .collect(),
        task_specs: vec![TaskSpec::class(task, 10)],
        labels: vec![(0..n).map(|i| ((i + seed) % 10) as u32).collect()],
    }
}

fn collect(loader: &Loader, epoch: u64) -> Vec<Batch> {
    loader.epoch(epoch).map(|b| b.unwrap()).collect()
}

#[test]
fn output_is_identical_for_any_worker_count() {
    let aug = Augment::cifar_train([0.49, 0.48, 0.45], [0.25, 0.24, 0.26]);
    let make = |workers| {
        let cfg = LoaderConfig {
            batch_size: 7,
            workers,
            prefetch: 1,
            seed: 3,
            ..Default::default()
        };
        Loader::new(
            vec![Source::new(
                synthetic(50, 32, 32, 3, "class", 0),
                aug.clone(),
            )],
            cfg,
        )
        .unwrap()
    };
    let reference = collect(&make(0), 2);
    assert_eq!(reference.len(), 8);
    for w in [1, 2, 5] {
        assert_eq!(collect(&make(w), 2), reference, "workers = {w}");
    }
    // Shuffle covers every sample once; another epoch gives another order and other crops.
    let mut seen: Vec<usize> = reference.iter().flat_map(|b| b.indices.clone()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());
    let other = collect(&make(2), 3);
    assert_ne!(other[0].indices, reference[0].indices);
    // Labels travel with their samples.
    for b in &reference {
        let TaskBatch::Class { labels, mask } = &b.targets[0] else {
            panic!()
        };
        for (k, &i) in b.indices.iter().enumerate() {
            assert_eq!(labels[k], (i % 10) as u32);
            assert!(mask[k]);
        }
    }
}

#[test]
fn no_shuffle_drop_last_and_dropping_early() {
    let cfg = LoaderConfig {
        batch_size: 4,
        shuffle: false,
        drop_last: true,
        workers: 2,
        ..Default::default()
    };
    let loader = Loader::new(
        vec![Source::new(
            synthetic(10, 3, 2, 1, "digit", 1),
            Augment::default(),
        )],
        cfg,
    )
    .unwrap();
    assert_eq!(loader.num_batches(), 2);
    let batches = collect(&loader, 0);
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[1].indices, vec![4, 5, 6, 7]);
    assert_eq!(batches[0].shape, [4, 1, 3, 2]);
    // HWC u8 -> CHW f32 in [0, 1] without normalisation: pixel i of sample 0 is (i*37+11)%256.
    for i in 0..6 {
        assert!((batches[0].images[i] - ((i * 37 + 11) % 256) as f32 / 255.0).abs() < 1e-6);
    }
    // Dropping an epoch mid-way joins its workers (no hang, no leak).
    let mut e = loader.epoch(1);
    let _ = e.next();
    drop(e);
}

#[test]
fn two_domains_share_a_task_and_mask_the_other() {
    // MNIST-like 28x28 and digits-like 8x8 (resized to 28x28), a shared "digit" head and a
    // second task only domain 1 has.
    let mut b = synthetic(30, 8, 8, 1, "digit", 2);
    b.task_specs.push(TaskSpec::class("parity", 2));
    b.labels.push((0..30).map(|i| (i % 2) as u32).collect());
    let resize = Augment {
        resize: Some((28, 28, scalarize_data::transforms::Interp::Bilinear)),
        ..Default::default()
    };
    let sources = vec![
        Source::new(synthetic(40, 28, 28, 1, "digit", 0), Augment::default()),
        Source::new(b, resize),
    ];
    let cfg = LoaderConfig {
        batch_size: 16,
        workers: 2,
        seed: 11,
        ..Default::default()
    };
    let loader = Loader::new(sources, cfg).unwrap();
    assert_eq!(
        loader
            .tasks()
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["digit", "parity"]
    );
    let sampler = DomainSampler::new(&[1.0, 3.0], 5).unwrap();
    let batches: Vec<Batch> = loader
        .epoch_sampled(0, &sampler)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(batches.len(), 5);
    for batch in &batches {
        assert_eq!(batch.shape, [16, 1, 28, 28]);
        let TaskBatch::Class { mask, labels } = &batch.targets[1] else {
            panic!()
        };
        for k in 0..16 {
            assert_eq!(mask[k], batch.sources[k] == 1);
            if mask[k] {
                assert_eq!(labels[k], (batch.indices[k] % 2) as u32);
            }
        }
        assert!(batch.targets[0].mask().iter().all(|&m| m));
    }
    // Same plan for any worker count.
    let single = Loader::new(
        loader_sources(&loader),
        LoaderConfig {
            workers: 0,
            ..loader.config().clone()
        },
    )
    .unwrap();
    let again: Vec<Batch> = single
        .epoch_sampled(0, &sampler)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(again, batches);
}

fn loader_sources(l: &Loader) -> Vec<Source> {
    let _ = l;
    let mut b = synthetic(30, 8, 8, 1, "digit", 2);
    b.task_specs.push(TaskSpec::class("parity", 2));
    b.labels.push((0..30).map(|i| (i % 2) as u32).collect());
    let resize = Augment {
        resize: Some((28, 28, scalarize_data::transforms::Interp::Bilinear)),
        ..Default::default()
    };
    vec![
        Source::new(synthetic(40, 28, 28, 1, "digit", 0), Augment::default()),
        Source::new(b, resize),
    ]
}

#[test]
fn mismatched_shapes_are_an_error_not_a_panic() {
    let sources = vec![
        Source::new(synthetic(4, 28, 28, 1, "digit", 0), Augment::default()),
        Source::new(synthetic(4, 8, 8, 1, "digit", 0), Augment::default()),
    ];
    let loader = Loader::new(
        sources,
        LoaderConfig {
            batch_size: 8,
            workers: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let err = loader.epoch(0).next().unwrap().unwrap_err().to_string();
    assert!(err.contains("shape"), "{err}");
}

/// Empirical domain frequencies against p: each count is Binomial(N, p_d); with N = 40,000
/// draws a 5-sigma band fails with probability < 6e-7 per domain, and the seed is fixed.
/// Also a chi-square statistic against the 99.9999% quantile for 3 degrees of freedom (~30.7).
/// Changing p between epochs changes the ratios accordingly.
#[test]
fn sampler_ratios_match_p_within_sampling_error() {
    let sizes = [50usize, 7, 300, 1];
    for (epoch, p) in [[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.15, 0.05]]
        .iter()
        .enumerate()
    {
        let sampler = DomainSampler::new(p, 625).unwrap();
        let plan = sampler.plan(&sizes, 64, 42, epoch as u64).unwrap();
        let n: usize = plan.iter().map(|b| b.len()).sum();
        assert_eq!(n, 40_000);
        let mut counts = [0usize; 4];
        let mut per_domain_seen = vec![Vec::new(); 4];
        for b in &plan {
            for &(d, i) in b {
                counts[d] += 1;
                assert!(i < sizes[d]);
                per_domain_seen[d].push(i);
            }
        }
        let mut chi2 = 0.0;
        for d in 0..4 {
            let expected = n as f64 * p[d];
            let sd = (n as f64 * p[d] * (1.0 - p[d])).sqrt();
            assert!(
                (counts[d] as f64 - expected).abs() < 5.0 * sd,
                "domain {d}: {} vs {expected} (sd {sd})",
                counts[d]
            );
            chi2 += (counts[d] as f64 - expected).powi(2) / expected;
        }
        assert!(chi2 < 30.7, "chi2 = {chi2}");
        // Without replacement within a pass: the first `size` draws of a domain are distinct.
        let mut first: Vec<usize> = per_domain_seen[2][..300].to_vec();
        first.sort_unstable();
        assert_eq!(first, (0..300).collect::<Vec<_>>());
    }
    assert!(DomainSampler::new(&[0.5, -0.1], 1).is_err());
    assert!(DomainSampler::new(&[0.0, 0.0], 1).is_err());
}

#[test]
fn a_zero_probability_domain_is_never_drawn() {
    let sampler = DomainSampler::new(&[0.0, 1.0], 10).unwrap();
    let plan = sampler.plan(&[5, 5], 8, 1, 0).unwrap();
    assert!(plan.iter().flatten().all(|&(d, _)| d == 1));
    assert_eq!(synthetic(3, 1, 1, 1, "x", 0).len(), 3);
}

/// Dense and segmentation targets are collated CHW / HW, flipped with the image, and masked.
#[test]
fn dense_targets_collate_and_follow_the_flip() {
    use scalarize_data::{DenseMap, Image, LabelMap, Sample, Target, TaskKind};
    struct Dense;
    impl Dataset for Dense {
        fn len(&self) -> usize {
            6
        }
        fn tasks(&self) -> Vec<TaskSpec> {
            vec![
                TaskSpec {
                    name: "normal".into(),
                    kind: TaskKind::Dense { channels: 2 },
                },
                TaskSpec {
                    name: "seg".into(),
                    kind: TaskKind::Segmentation { num_classes: 5 },
                },
            ]
        }
        fn get(&self, i: usize) -> scalarize_data::Result<Sample> {
            let (h, w) = (2, 3);
            let image = Image::new(h, w, 1, (0..6).map(|p| (p * 10 + i) as u8).collect());
            // values[(y*w+x)*2 + c] = 100*c + 10*y + x + 1
            let values = (0..6)
                .flat_map(|p| {
                    [
                        (10 * (p / 3) + p % 3 + 1) as f32,
                        (100 + 10 * (p / 3) + p % 3 + 1) as f32,
                    ]
                })
                .collect();
            let normal = DenseMap {
                height: h,
                width: w,
                channels: 2,
                values,
                flip_negates: Some(0),
            };
            let seg = LabelMap {
                height: h,
                width: w,
                labels: (0..6).collect(),
            };
            let seg = if i.is_multiple_of(2) {
                Some(Target::Segmentation(seg))
            } else {
                None
            };
            Ok(Sample {
                image,
                targets: vec![Some(Target::Dense(normal)), seg],
            })
        }
    }
    let aug = Augment {
        flip: true,
        ..Default::default()
    };
    let cfg = LoaderConfig {
        batch_size: 6,
        shuffle: false,
        workers: 1,
        seed: 4,
        ..Default::default()
    };
    let b = Loader::new(vec![Source::new(Dense, aug)], cfg)
        .unwrap()
        .epoch(0)
        .next()
        .unwrap()
        .unwrap();
    let TaskBatch::Dense {
        values,
        shape,
        mask,
    } = &b.targets[0]
    else {
        panic!()
    };
    let TaskBatch::Segmentation {
        labels,
        mask: seg_mask,
        ..
    } = &b.targets[1]
    else {
        panic!()
    };
    assert_eq!(*shape, [2, 2, 3]);
    assert!(mask.iter().all(|&m| m));
    let mut flipped = 0;
    for s in 0..6 {
        // Flip state from the image: pixel (0,0) is 0*10+s unflipped, 2*10+s flipped.
        let flip = (b.images[s * 6] - (20 + s) as f32 / 255.0).abs() < 1e-6;
        flipped += flip as usize;
        for y in 0..2 {
            for x in 0..3 {
                let sx = if flip { 2 - x } else { x };
                let sign = if flip { -1.0 } else { 1.0 };
                assert_eq!(values[s * 12 + y * 3 + x], sign * (10 * y + sx + 1) as f32);
                assert_eq!(
                    values[s * 12 + 6 + y * 3 + x],
                    (100 + 10 * y + sx + 1) as f32
                );
                if s % 2 == 0 {
                    assert_eq!(labels[s * 6 + y * 3 + x], (y * 3 + sx) as u16);
                }
            }
        }
        assert_eq!(seg_mask[s], s % 2 == 0);
    }
    assert!(flipped > 0 && flipped < 6, "flips: {flipped}");
}
