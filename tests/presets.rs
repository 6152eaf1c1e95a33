//! End to end: the presets that read a data folder (`cifar-stl`, `domainnet`, `celeba`,
//! `taskonomy-tiny`) trained for two steps on tiny fake data sets written here in the exact
//! real on-disk formats; `scalarize data check` on those folders; and the error of a preset
//! pointed at an empty folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn pixel(seed: usize, i: usize) -> u8 {
    ((i * 131 + seed * 71 + (i >> 5) * 17) % 256) as u8
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn encode<P, C>(img: image::ImageBuffer<P, C>, format: image::ImageFormat) -> Vec<u8>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn jpeg(h: u32, w: u32, seed: usize) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            pixel(seed, (y * w + x) as usize),
            (x * 7 + seed as u32) as u8,
            (y * 5) as u8,
        ])
    });
    encode(img, image::ImageFormat::Jpeg)
}

fn png_rgb(h: u32, w: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    encode(
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y))),
        image::ImageFormat::Png,
    )
}

fn png_gray16(h: u32, w: u32, f: impl Fn(u32, u32) -> u16) -> Vec<u8> {
    let img = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(w, h, |x, y| {
        image::Luma([f(x, y)])
    });
    encode(img, image::ImageFormat::Png)
}

fn png_gray8(h: u32, w: u32, f: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    encode(
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)])),
        image::ImageFormat::Png,
    )
}

/// CIFAR-10 test records: every class once plus 4 more frogs (class 6), so 9 remain once the
/// frogs are dropped. STL-10 test: every class once plus 4 more monkeys (file label 8).
const CIFAR_TEST: [u8; 14] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 6, 6, 6, 6];
const STL_TEST: [u8; 14] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 8, 8, 8, 8];

/// `root/cifar-10-batches-bin/` (5 train batches of 10 records, every class, and a test
/// batch) and `root/stl10_binary/` (train: every class twice; labels 1..10, column-major
/// 96x96 planes).
fn cifar_stl_data(root: &Path) {
    let cifar = root.join("cifar-10-batches-bin");
    let record = |label: u8, seed: usize| {
        let mut r = vec![label];
        r.extend((0..3072).map(|i| pixel(seed, i)));
        r
    };
    for b in 1..=5 {
        let bytes: Vec<u8> = (0..10u8)
            .flat_map(|c| record(c, b * 10 + c as usize))
            .collect();
        write(&cifar.join(format!("data_batch_{b}.bin")), &bytes);
    }
    let test: Vec<u8> = CIFAR_TEST
        .iter()
        .enumerate()
        .flat_map(|(i, &c)| record(c, 100 + i))
        .collect();
    write(&cifar.join("test_batch.bin"), &test);
    let stl = root.join("stl10_binary");
    for (split, labels) in [
        ("train", (1..=10u8).chain(1..=10).collect::<Vec<_>>()),
        ("test", STL_TEST.to_vec()),
    ] {
        let x: Vec<u8> = (0..labels.len())
            .flat_map(|r| (0..27648).map(move |i| pixel(200 + r, i)))
            .collect();
        write(&stl.join(format!("{split}_X.bin")), &x);
        write(&stl.join(format!("{split}_y.bin")), &labels);
    }
}

/// DomainNet `real` and `clipart`: `{domain}_{train,test}.txt` listing
/// `{domain}/{class}/{domain}_{i}_000001.jpg {label}` with 20x24 JPEGs (10 train, 4 test each).
fn domainnet_data(root: &Path) {
    let classes = [
        ("aircraft_carrier", 0u32),
        ("bat", 20),
        ("cat", 63),
        ("zigzag", 344),
    ];
    for domain in ["real", "clipart"] {
        for (split, n) in [("train", 10usize), ("test", 4)] {
            let mut list = String::new();
            for i in 0..n {
                let (class, label) = classes[i % classes.len()];
                let rel = format!("{domain}/{class}/{domain}_{split}_{i:03}_000001.jpg");
                write(&root.join(&rel), &jpeg(20, 24, i + 31 * domain.len()));
                list.push_str(&format!("{rel} {label}\n"));
            }
            write(&root.join(format!("{domain}_{split}.txt")), list.as_bytes());
        }
    }
}

/// The 40 CelebA attributes, in the file's order.
const CELEBA_ATTRIBUTES: [&str; 40] = [
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
];

/// CelebA: 24 aligned JPEGs (22x18), `list_attr_celeba.txt` (count line, names line with the
/// real trailing space, `file  ±1 x40` rows) and `list_eval_partition.txt` (16/4/4).
fn celeba_data(root: &Path) {
    let n = 24usize;
    let mut attr = format!("{n}\n{} \n", CELEBA_ATTRIBUTES.join(" "));
    let mut part = String::new();
    for i in 1..=n {
        let file = format!("{i:06}.jpg");
        let vals: Vec<String> = (0..40)
            .map(|k| {
                let v = if (i * 3 + k * 7) % 5 < 2 { 1 } else { -1 };
                format!("{v:>2}")
            })
            .collect();
        attr.push_str(&format!("{file} {}\n", vals.join(" ")));
        let p = match i {
            1..=16 => 0,
            17..=20 => 1,
            _ => 2,
        };
        part.push_str(&format!("{file} {p}\n"));
        write(&root.join("img_align_celeba").join(&file), &jpeg(22, 18, i));
    }
    write(&root.join("list_attr_celeba.txt"), attr.as_bytes());
    write(&root.join("list_eval_partition.txt"), part.as_bytes());
}

/// The preset's Taskonomy tasks.
const TASKONOMY_TASKS: [&str; 4] = [
    "depth_euclidean",
    "normal",
    "edge_texture",
    "segment_semantic",
];

/// Taskonomy-tiny: two buildings of 6 views (24x24 PNGs); every target present except
/// `segment_semantic` of the second building's last two views (real buildings lack some
/// targets). Segmentation labels include the ignore code 255 besides classes 0..16.
fn taskonomy_data(root: &Path) {
    let (h, w) = (24u32, 24u32);
    for (b, building) in ["allensville", "beechwood"].iter().enumerate() {
        for k in 0..6u32 {
            let (p, v) = (k * 3 + b as u32, k % 2);
            let stem = format!("point_{p}_view_{v}_domain");
            let dir = root.join(building);
            write(
                &dir.join("rgb").join(format!("{stem}_rgb.png")),
                &png_rgb(h, w, |x, y| {
                    [(x * 10) as u8, (y * 10) as u8, (p * 13) as u8]
                }),
            );
            write(
                &dir.join("depth_euclidean")
                    .join(format!("{stem}_depth_euclidean.png")),
                &png_gray16(h, w, |x, y| {
                    if y == 0 {
                        u16::MAX
                    } else {
                        (x * 900 + y * 40 + p) as u16
                    }
                }),
            );
            write(
                &dir.join("normal").join(format!("{stem}_normal.png")),
                &png_rgb(h, w, |x, y| [(x * 10) as u8, 128, (y * 10) as u8]),
            );
            write(
                &dir.join("edge_texture")
                    .join(format!("{stem}_edge_texture.png")),
                &png_gray16(h, w, |x, y| ((x + y) * 1300) as u16),
            );
            if b == 0 || k < 4 {
                write(
                    &dir.join("segment_semantic")
                        .join(format!("{stem}_segment_semantic.png")),
                    &png_gray8(h, w, |x, y| {
                        if x == 0 {
                            255
                        } else {
                            ((x / 4 + y / 4) % 17) as u8
                        }
                    }),
                );
            }
        }
    }
}

/// A tiny config over `preset` (its own model): data in `root` at 16x16, 1 epoch of 2 steps
/// (no warmup: the presets warm up for 1-2 epochs, which must be under `epochs`).
fn tiny_config(dir: &Path, preset: &str, root: &Path) -> PathBuf {
    let path = dir.join(format!("{preset}.toml"));
    let text = format!(
        "preset = \"{preset}\"\n\
         [data]\nroot = {root:?}\nresolution = 16\ntrain_limit = 64\neval_limit = 16\nworkers = 0\n\
         [train]\nepochs = 1\nsteps_per_epoch = 2\nwarmup_epochs = 0.0\nbatch_size = 8\nlog_every = 1\nthreads = 2\n",
        root = root.display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn scalarize(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scalarize"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Trains `preset` on the data in `root` and checks the run folder: the preset's `model`, the
/// objectives named `names` (a `problem` problem), one result with one metric in [0, 1] per
/// objective. Returns the result.
fn train_and_check(preset: &str, root: &Path, model: &str, problem: &str, names: &[&str]) -> Value {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path(), preset, root);
    let out_dir = tmp.path().join("run");
    let o = scalarize(&["train", "--config", s(&cfg), "--out", s(&out_dir)]);
    assert!(o.status.success(), "{preset}: {}\n{}", o.status, text(&o));
    let run: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["preset"], preset);
    assert_eq!(run["model"], model);
    assert_eq!(run["problem"], problem);
    assert_eq!(run["tasks"], serde_json::json!(names));
    let results: Vec<Value> = std::fs::read_to_string(out_dir.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 1, "{results:?}");
    let r = results.into_iter().next().unwrap();
    assert_eq!(r["steps"], 2, "{r}");
    for key in ["task_metric", "test_task_metric"] {
        let m = r[key]
            .as_array()
            .unwrap_or_else(|| panic!("{preset}: no {key} in {r}"));
        assert_eq!(m.len(), names.len(), "{preset} {key}: {r}");
        for v in m {
            let x = v
                .as_f64()
                .unwrap_or_else(|| panic!("{preset} {key}: {v} in {r}"));
            assert!((0.0..=1.0).contains(&x), "{preset} {key}: {r}");
        }
    }
    r
}

#[test]
fn cifar_stl_trains_on_the_nine_shared_classes() {
    let data = tempfile::tempdir().unwrap();
    cifar_stl_data(data.path());
    let r = train_and_check(
        "cifar-stl",
        data.path(),
        "resnet26:w1",
        "mdl",
        &["cifar10", "stl10"],
    );
    // Frogs and monkeys are dropped: each test set keeps 9 of its 14 images, so the test
    // accuracies are multiples of 1/9 (with the 14 they would be multiples of 1/14).
    for v in r["test_task_metric"].as_array().unwrap() {
        let k = v.as_f64().unwrap() * 9.0;
        assert!((k - k.round()).abs() < 1e-6, "{r}");
    }
    // Each binary folder passes `data check`, frogs and monkeys included (labels in range).
    for (sub, format, n_test) in [
        ("cifar-10-batches-bin", "cifar10", CIFAR_TEST.len()),
        ("stl10_binary", "stl10", STL_TEST.len()),
    ] {
        let o = scalarize(&["data", "check", s(&data.path().join(sub))]);
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        assert!(out.contains(&format!("format {format}")), "{out}");
        assert!(
            out.contains(&format!("test: {n_test} samples, 0 errors")),
            "{out}"
        );
    }
}

#[test]
fn domainnet_trains_one_head_per_domain() {
    let data = tempfile::tempdir().unwrap();
    domainnet_data(data.path());
    train_and_check(
        "domainnet",
        data.path(),
        "resnet26:w1",
        "mdl",
        &["real", "clipart"],
    );
    let o = scalarize(&["data", "check", s(data.path())]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("format domainnet") && out.contains("clipart train: 10 samples, 0 errors"),
        "{out}"
    );
}

#[test]
fn celeba_trains_one_binary_task_per_attribute() {
    let data = tempfile::tempdir().unwrap();
    celeba_data(data.path());
    // The preset's 8 attributes on its ViT-S with 8x8 patches (16 = 2 x 8).
    train_and_check(
        "celeba",
        data.path(),
        "vit-s:p8",
        "mtl",
        &[
            "Attractive",
            "Black_Hair",
            "Blond_Hair",
            "Eyeglasses",
            "Male",
            "Mouth_Slightly_Open",
            "Smiling",
            "Wearing_Hat",
        ],
    );
    let o = scalarize(&["data", "check", s(data.path())]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for split in ["train: 16", "valid: 4", "test: 4"] {
        assert!(out.contains(&format!("{split} samples, 0 errors")), "{out}");
    }
}

#[test]
fn taskonomy_trains_dense_and_segmentation_heads() {
    let data = tempfile::tempdir().unwrap();
    taskonomy_data(data.path());
    train_and_check(
        "taskonomy-tiny",
        data.path(),
        "resnet26:w0.5",
        "mtl",
        &TASKONOMY_TASKS,
    );
    let o = scalarize(&["data", "check", s(data.path())]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("format taskonomy") && out.contains("12 samples, 0 errors"),
        "{out}"
    );
}

#[test]
fn presets_without_their_files_name_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    // CIFAR-10 present, STL-10 absent.
    let half = tmp.path().join("cifar-only");
    cifar_stl_data(&half);
    std::fs::remove_dir_all(half.join("stl10_binary")).unwrap();
    let path = |root: &Path, rel: &str| root.join(rel).display().to_string();
    for (preset, root, missing) in [
        (
            "cifar-stl",
            &empty,
            path(&empty, "cifar-10-batches-bin/data_batch_1.bin"),
        ),
        ("cifar-stl", &half, path(&half, "stl10_binary/train_X.bin")),
        ("domainnet", &empty, path(&empty, "real_train.txt")),
        ("celeba", &empty, path(&empty, "list_attr_celeba.txt")),
        (
            "taskonomy-tiny",
            &empty,
            "/rgb/point_{P}_view_{V}_domain_rgb.png".to_string(),
        ),
    ] {
        let cfg = tiny_config(tmp.path(), preset, root);
        let out_dir = tmp.path().join(format!("run-{preset}"));
        let o = scalarize(&["train", "--config", s(&cfg), "--out", s(&out_dir)]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{preset}: {}", text(&o));
        assert!(!err.contains("panicked"), "{preset}: {err}");
        assert!(
            err.contains(&missing),
            "{preset}: `{missing}` not named in {err}"
        );
        assert!(!out_dir.exists(), "{preset}: no run folder without data");
    }
}
