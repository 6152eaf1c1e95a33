//! Every reader on files written here in the exact real on-disk format, checked pixel by pixel
//! and label by label, plus the error messages for bad input.

use std::io::Write;
use std::path::Path;

use scalarize_data::readers::{CelebA, DomainNet, MultiMnist, Taskonomy};
use scalarize_data::readers::{cifar, cifar_stl, digits, mnist, stl10};
use scalarize_data::{DataError, Dataset, Split, Target};

fn pixel(seed: usize, i: usize) -> u8 {
    ((i * 131 + seed * 71 + (i >> 5) * 17) % 256) as u8
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn cifar10_reads_labels_and_chw_planes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cifar-10-batches-bin");
    let mut recs = Vec::new();
    for (f, name) in [
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ]
    .iter()
    .enumerate()
    {
        let mut bytes = Vec::new();
        for r in 0..(f + 1) {
            let label = ((f * 3 + r) % 10) as u8;
            bytes.push(label);
            let px: Vec<u8> = (0..3072).map(|i| pixel(f * 10 + r, i)).collect();
            bytes.extend_from_slice(&px);
            recs.push((label, px));
        }
        write(&root.join(format!("{name}.bin")), &bytes);
    }
    // Open through the parent folder for train and the batches folder for test.
    let train = cifar::open_cifar10(dir.path(), Split::Train).unwrap();
    let test = cifar::open_cifar10(&root, Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (15, 6));
    for (k, (label, px)) in recs.iter().enumerate() {
        let (ds, i) = if k < 15 { (&train, k) } else { (&test, k - 15) };
        let s = ds.get(i).unwrap();
        assert_eq!(s.targets, vec![Some(Target::Class(*label as u32))]);
        for c in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    assert_eq!(s.image.get(y, x, c), px[c * 1024 + y * 32 + x]);
                }
            }
        }
    }
}

#[test]
fn cifar100_reads_fine_and_coarse() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cifar-100-binary");
    let mut bytes = Vec::new();
    for r in 0..4u8 {
        bytes.push(r * 5); // coarse
        bytes.push(r * 24 + 3); // fine
        bytes.extend((0..3072).map(|i| pixel(r as usize, i)));
    }
    write(&root.join("train.bin"), &bytes);
    let ds = cifar::open_cifar100(dir.path(), Split::Train).unwrap();
    assert_eq!(ds.tasks()[0].name, "fine");
    for r in 0..4usize {
        let s = ds.get(r).unwrap();
        assert_eq!(
            s.targets,
            vec![
                Some(Target::Class(r as u32 * 24 + 3)),
                Some(Target::Class(r as u32 * 5))
            ]
        );
        assert_eq!(s.image.get(7, 9, 2), pixel(r, 2048 + 7 * 32 + 9));
    }
    // Fine label 100 is out of range: error names file, record and value.
    bytes[3074 * 2 + 1] = 100;
    write(&root.join("train.bin"), &bytes);
    match cifar::open_cifar100(dir.path(), Split::Train) {
        Err(DataError::Label {
            path,
            record,
            value,
            ..
        }) => {
            assert!(path.ends_with("train.bin"));
            assert_eq!((record, value), (2, 100));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn cifar_truncated_file_names_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = vec![1u8; 3073 * 2 + 100];
    bytes[0] = 3;
    write(&dir.path().join("test_batch.bin"), &bytes);
    let err = cifar::open_cifar10(dir.path(), Split::Test).unwrap_err();
    match &err {
        DataError::Size { path, offset, .. } => {
            assert!(path.ends_with("test_batch.bin"));
            assert_eq!(*offset, 3073 * 2);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("6146"), "{err}");
}

#[test]
fn missing_folder_names_path_and_layout() {
    let dir = tempfile::tempdir().unwrap();
    let err = cifar::open_cifar10(&dir.path().join("nope"), Split::Train).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::Missing { .. }), "{msg}");
    assert!(
        msg.contains("data_batch_1.bin") && msg.contains("cifar-10-batches-bin"),
        "{msg}"
    );
    let err = mnist::open(&dir.path().join("mnist"), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("images-idx3-ubyte") && err.contains("mnist"),
        "{err}"
    );
}

#[test]
fn stl10_column_major_and_labels_1_to_10() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("stl10_binary");
    let n = 3;
    let mut x = Vec::new();
    for r in 0..n {
        x.extend((0..27648).map(|i| pixel(r, i)));
    }
    write(&root.join("train_X.bin"), &x);
    write(&root.join("train_y.bin"), &[1, 10, 8]);
    let ds = stl10::open(dir.path(), Split::Train).unwrap();
    assert_eq!(ds.len(), 3);
    for r in 0..n {
        let s = ds.get(r).unwrap();
        assert_eq!(s.targets[0], Some(Target::Class([0, 9, 7][r])));
        for c in 0..3 {
            for row in 0..96 {
                for col in 0..96 {
                    // Column-major per channel: byte c*9216 + col*96 + row.
                    assert_eq!(
                        s.image.get(row, col, c),
                        pixel(r, c * 9216 + col * 96 + row)
                    );
                }
            }
        }
    }
    // The shared-class mapping drops STL's monkey (label 8 in the file, 7 after -1).
    let shared = ds.remap_classes(&cifar_stl::STL10_TO_SHARED, cifar_stl::SHARED_CLASSES);
    assert_eq!(shared.labels[0], vec![0, 8]);
    write(&root.join("train_y.bin"), &[1, 0, 8]);
    match stl10::open(dir.path(), Split::Train) {
        Err(DataError::Label {
            record: 1,
            value: 0,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

fn idx_images(n: usize, rows: usize, cols: usize, seed: usize) -> (Vec<u8>, Vec<u8>) {
    let mut b = Vec::new();
    b.extend_from_slice(&0x0803u32.to_be_bytes());
    for d in [n, rows, cols] {
        b.extend_from_slice(&(d as u32).to_be_bytes());
    }
    let px: Vec<u8> = (0..n * rows * cols).map(|i| pixel(seed, i)).collect();
    b.extend_from_slice(&px);
    (b, px)
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = 0x0801u32.to_be_bytes().to_vec();
    b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

#[test]
fn mnist_raw_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let (img, px) = idx_images(5, 28, 28, 1);
    let labels = [3u8, 0, 9, 1, 7];
    write(&dir.path().join("train-images-idx3-ubyte"), &img);
    write(
        &dir.path().join("train-labels-idx1-ubyte"),
        &idx_labels(&labels),
    );
    write(&dir.path().join("t10k-images-idx3-ubyte.gz"), &gz(&img));
    write(
        &dir.path().join("t10k-labels-idx1-ubyte.gz"),
        &gz(&idx_labels(&labels)),
    );
    for split in [Split::Train, Split::Test] {
        let ds = mnist::open(dir.path(), split).unwrap();
        assert_eq!(ds.len(), 5);
        for i in 0..5 {
            let s = ds.get(i).unwrap();
            assert_eq!(s.targets[0], Some(Target::Class(labels[i] as u32)));
            assert_eq!(s.image.data, px[i * 784..(i + 1) * 784]);
        }
    }
    // Truncated payload: offset = 16-byte header + bytes present.
    write(
        &dir.path().join("train-images-idx3-ubyte"),
        &img[..16 + 1000],
    );
    match mnist::open(dir.path(), Split::Train) {
        Err(DataError::Size { offset: 1016, .. }) => {}
        other => panic!("{other:?}"),
    }
    // Oversized: offset = end of the declared payload.
    let mut big = img.clone();
    big.extend_from_slice(&[0, 0]);
    write(&dir.path().join("train-images-idx3-ubyte"), &big);
    match mnist::open(dir.path(), Split::Train) {
        Err(DataError::Size { offset, .. }) => assert_eq!(offset, 16 + 5 * 784),
        other => panic!("{other:?}"),
    }
    // Label 10 is out of range.
    write(&dir.path().join("train-images-idx3-ubyte"), &img);
    write(
        &dir.path().join("train-labels-idx1-ubyte"),
        &idx_labels(&[1, 2, 10, 3, 4]),
    );
    match mnist::open(dir.path(), Split::Train) {
        Err(DataError::Label {
            record: 2,
            value: 10,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn digits_csv_gz_values_and_stratified_split() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    let mut rows = Vec::new();
    for r in 0..30usize {
        let vals: Vec<u8> = (0..64).map(|i| ((r * 7 + i * 3) % 17) as u8).collect();
        let label = (r % 3) as u8;
        let line: Vec<String> = vals
            .iter()
            .map(|v| v.to_string())
            .chain([label.to_string()])
            .collect();
        text.push_str(&line.join(","));
        text.push('\n');
        rows.push((vals, label));
    }
    write(&dir.path().join("digits.csv.gz"), &gz(text.as_bytes()));
    let train = digits::open(dir.path(), Split::Train).unwrap();
    let test = digits::open(dir.path(), Split::Test).unwrap();
    // 10 per class -> 2 test each (the last two of each class: rows 24..30).
    assert_eq!((train.len(), test.len()), (24, 6));
    for (k, r) in (24..30).enumerate() {
        let s = test.get(k).unwrap();
        assert_eq!(s.targets[0], Some(Target::Class(rows[r].1 as u32)));
        let want: Vec<u8> = rows[r]
            .0
            .iter()
            .map(|&v| ((v as f64 * 255.0 / 16.0) + 0.5) as u8)
            .collect();
        assert_eq!(s.image.data, want);
    }
    write(&dir.path().join("digits.csv.gz"), &gz(b"0,0,1\n"));
    let err = digits::open(dir.path(), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 1") && err.contains("65"), "{err}");
}

fn jpeg(h: u32, w: u32, seed: usize) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            pixel(seed, (y * w + x) as usize),
            (x * 7) as u8,
            (y * 5) as u8,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

#[test]
fn domainnet_split_files_and_skip_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut list = String::new();
    let mut expect = Vec::new();
    for (i, (class, label)) in [("aircraft_carrier", 0u32), ("zigzag", 344), ("bat", 20)]
        .iter()
        .enumerate()
    {
        let rel = format!("clipart/{class}/clipart_{i:03}_000001.jpg");
        let bytes = jpeg(12, 16, i);
        write(&root.join(&rel), &bytes);
        list.push_str(&format!("{rel} {label}\n"));
        expect.push((
            image::load_from_memory(&bytes)
                .unwrap()
                .into_rgb8()
                .into_raw(),
            *label,
        ));
    }
    write(&root.join("clipart_train.txt"), list.as_bytes());
    let ds = DomainNet::open(root, "clipart", Split::Train, (12, 16)).unwrap();
    assert_eq!(ds.len(), 3);
    for (i, (px, label)) in expect.iter().enumerate() {
        let s = ds.get(i).unwrap();
        assert_eq!(s.targets[0], Some(Target::Class(*label)));
        assert_eq!(&s.image.data, px, "same size: decoded pixels unchanged");
    }
    // Corrupt image: a decode error naming the file; skip_corrupt in the loader counts it.
    write(
        &root.join("clipart/bat/clipart_002_000001.jpg"),
        b"not a jpeg",
    );
    let err = ds.get(2).unwrap_err();
    assert!(
        matches!(err, DataError::Decode { .. })
            && err.to_string().contains("clipart_002_000001.jpg"),
        "{err}"
    );
    use scalarize_data::{Augment, Loader, LoaderConfig, Source};
    let cfg = LoaderConfig {
        batch_size: 3,
        shuffle: false,
        workers: 1,
        skip_corrupt: true,
        ..Default::default()
    };
    let loader = Loader::new(
        vec![Source::new(ds.clone(), Augment::default())],
        cfg.clone(),
    )
    .unwrap();
    let mut epoch = loader.epoch(0);
    let b = epoch.next().unwrap().unwrap();
    assert_eq!(
        (b.len(), b.skipped.len(), b.indices.clone()),
        (2, 1, vec![0, 1])
    );
    assert!(b.skipped[0].2.contains("clipart_002_000001.jpg"));
    assert_eq!(epoch.skipped(), 1);
    let strict = Loader::new(
        vec![Source::new(ds, Augment::default())],
        LoaderConfig {
            skip_corrupt: false,
            ..cfg
        },
    )
    .unwrap();
    assert!(strict.epoch(0).next().unwrap().is_err());
    // Out-of-range label names the split file and line.
    write(
        &root.join("clipart_test.txt"),
        b"clipart/a/x.jpg 3\nclipart/a/y.jpg 345\n",
    );
    match DomainNet::open(root, "clipart", Split::Test, (8, 8)) {
        Err(DataError::Label {
            path,
            record: 2,
            value: 345,
            ..
        }) => assert!(path.ends_with("clipart_test.txt")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn celeba_two_header_lines_partition_and_attribute_subset() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let names: Vec<String> = (0..40).map(|k| format!("Attr_{k}")).collect();
    let mut attr = format!("5\n{}\n", names.join(" "));
    let mut part = String::new();
    let mut table = Vec::new();
    for i in 1..=5usize {
        let file = format!("{i:06}.jpg");
        let vals: Vec<i32> = (0..40)
            .map(|k| if (i * 3 + k * 7) % 5 < 2 { 1 } else { -1 })
            .collect();
        // The real file pads with two spaces before values; mimic that.
        attr.push_str(&format!(
            "{file}  {}\n",
            vals.iter()
                .map(|v| format!("{v:>2}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        part.push_str(&format!("{file} {}\n", [0, 1, 0, 2, 0][i - 1]));
        write(&root.join("img_align_celeba").join(&file), &jpeg(9, 7, i));
        table.push(vals);
    }
    write(&root.join("list_attr_celeba.txt"), attr.as_bytes());
    write(&root.join("list_eval_partition.txt"), part.as_bytes());
    let all = CelebA::open(root, Split::Train, None, None).unwrap();
    assert_eq!(all.len(), 3);
    for (k, &i) in [0usize, 2, 4].iter().enumerate() {
        let want: Vec<u8> = table[i].iter().map(|&v| u8::from(v == 1)).collect();
        assert_eq!(all.attributes(k), &want[..]);
        let s = all.get(k).unwrap();
        assert_eq!((s.image.height, s.image.width), (9, 7));
    }
    let sub = CelebA::open(root, Split::Test, Some(&["Attr_5", "Attr_0"]), Some((4, 4))).unwrap();
    assert_eq!(sub.len(), 1);
    assert_eq!(
        sub.attributes(0),
        &[u8::from(table[3][5] == 1), u8::from(table[3][0] == 1)]
    );
    assert_eq!(sub.get(0).unwrap().image.height, 4);
    let err = CelebA::open(root, Split::Test, Some(&["Smiling"]), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Smiling") && err.contains("line 2"), "{err}");
    // A 0 instead of -1 names the line and value.
    write(
        &root.join("list_attr_celeba.txt"),
        attr.replacen("-1", " 0", 1).as_bytes(),
    );
    match CelebA::open(root, Split::Train, None, None) {
        Err(DataError::Label {
            record: 3,
            value: 0,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

fn png_gray16(h: u32, w: u32, f: impl Fn(u32, u32) -> u16) -> Vec<u8> {
    let img = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(w, h, |x, y| {
        image::Luma([f(x, y)])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn png_rgb(h: u32, w: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn png_gray8(h: u32, w: u32, f: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    let img = image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn taskonomy_building_folders_and_dense_targets() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (h, w) = (6u32, 5u32);
    let stem = |p: u32, v: u32| format!("point_{p}_view_{v}_domain");
    for (b, points) in [
        ("allensville", vec![(0, 1), (3, 0)]),
        ("beechwood", vec![(7, 2)]),
    ] {
        for (p, v) in points {
            let s = stem(p, v);
            write(
                &root.join(b).join("rgb").join(format!("{s}_rgb.png")),
                &png_rgb(h, w, |x, y| [(x * 40) as u8, (y * 30) as u8, p as u8]),
            );
            write(
                &root
                    .join(b)
                    .join("depth_euclidean")
                    .join(format!("{s}_depth_euclidean.png")),
                &png_gray16(h, w, |x, y| (x * 1000 + y * 7 + p) as u16),
            );
            write(
                &root.join(b).join("normal").join(format!("{s}_normal.png")),
                &png_rgb(h, w, |x, y| [(x * 50) as u8, 128, (y * 40) as u8]),
            );
            if b == "allensville" {
                write(
                    &root
                        .join(b)
                        .join("segment_semantic")
                        .join(format!("{s}_segment_semantic.png")),
                    &png_gray8(h, w, |x, y| ((x + y) % 17) as u8),
                );
            }
        }
    }
    let tasks = ["depth_euclidean", "normal", "segment_semantic"];
    let ds = Taskonomy::open(root, None, &tasks, (h as usize, w as usize)).unwrap();
    assert_eq!(ds.len(), 3);
    // Sorted: allensville point_0_view_1, point_3_view_0, beechwood point_7_view_2.
    for (i, p) in [0u32, 3, 7].iter().enumerate() {
        let s = ds.get(i).unwrap();
        assert_eq!(s.image.get(2, 3, 0), 120);
        assert_eq!(s.image.get(2, 3, 2), *p as u8);
        let Some(Target::Dense(d)) = &s.targets[0] else {
            panic!()
        };
        let Some(Target::Dense(n)) = &s.targets[1] else {
            panic!()
        };
        for y in 0..h {
            for x in 0..w {
                let k = (y * w + x) as usize;
                assert_eq!(d.values[k], (x * 1000 + y * 7 + p) as f32 / 65535.0);
                assert_eq!(n.values[k * 3], (x * 50) as f32 / 255.0 * 2.0 - 1.0);
                assert_eq!(n.values[k * 3 + 2], (y * 40) as f32 / 255.0 * 2.0 - 1.0);
            }
        }
        match &s.targets[2] {
            Some(Target::Segmentation(l)) => {
                assert!(*p != 7);
                assert_eq!(l.labels[(2 * w + 4) as usize], 6);
            }
            None => assert_eq!(*p, 7, "beechwood has no segmentation: masked"),
            other => panic!("{other:?}"),
        }
    }
    // Resizing: depth nearest keeps only original values; segmentation stays labels.
    let small = Taskonomy::open(root, Some(&["allensville"]), &tasks, (3, 2)).unwrap();
    let s = small.get(0).unwrap();
    let Some(Target::Dense(d)) = &s.targets[0] else {
        panic!()
    };
    assert!(
        d.values
            .iter()
            .all(|v| (v * 65535.0).round() as u32 % 1000 < 6 * 7)
    );
    let err = Taskonomy::open(root, Some(&["nowhere"]), &tasks, (3, 2))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nowhere") && err.contains("domain_rgb.png"),
        "{err}"
    );
}

#[test]
fn multimnist_overlays_two_digits_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let (img, px) = idx_images(7, 28, 28, 3);
    write(&dir.path().join("train-images-idx3-ubyte"), &img);
    write(
        &dir.path().join("train-labels-idx1-ubyte"),
        &idx_labels(&[0, 1, 2, 3, 4, 5, 6]),
    );
    let src = mnist::open(dir.path(), Split::Train).unwrap();
    let mm = MultiMnist::new(src.clone(), 20, 5, None).unwrap();
    let mm2 = MultiMnist::new(src, 20, 5, None).unwrap();
    for i in 0..20 {
        let s = mm.get(i).unwrap();
        assert_eq!(s, mm2.get(i).unwrap());
        let (a, b, (ly, lx), (ry, rx)) = mm.layout(i);
        assert_eq!(a, i % 7);
        assert!(ly <= 4 && lx <= 4 && (4..=8).contains(&ry) && (4..=8).contains(&rx));
        assert_eq!(
            s.targets,
            vec![Some(Target::Class(a as u32)), Some(Target::Class(b as u32))]
        );
        for y in 0..36 {
            for x in 0..36 {
                let at = |d: usize, oy: usize, ox: usize| {
                    if y >= oy && y < oy + 28 && x >= ox && x < ox + 28 {
                        px[d * 784 + (y - oy) * 28 + x - ox]
                    } else {
                        0
                    }
                };
                assert_eq!(s.image.get(y, x, 0), at(a, ly, lx).max(at(b, ry, rx)));
            }
        }
    }
}
