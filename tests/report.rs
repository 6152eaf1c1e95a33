//! End to end: `scalarize report` on synthetic run folders written here.

use std::path::Path;
use std::process::{Command, Output};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

fn report(args: &[&Path]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scalarize"));
    c.arg("report").arg(args[0]);
    for b in &args[1..] {
        c.arg("--baselines").arg(b);
    }
    c.output().unwrap()
}

const RUN_JSON: &str = r#"{"command":"pbt","preset":"digits-mdl","problem":"mdl","tasks":["mnist","digits"],"metric":"accuracy","model":"resnet26:w0.25","version":"0.1.0"}"#;

/// A 2-task PBT run: uniform, two grid points, the PBT winner, an MTO method, a train run
/// and the mnist single-task baseline (digits' baseline lives in another folder).
fn pbt_run(dir: &Path) {
    write(dir, "run.json", RUN_JSON);
    let results = [
        r#"{"name":"grid-p0.800","kind":"grid","method":"scalarization","weights":[0.8,0.2],"task_metric":[0.94,0.74],"mean_metric":0.84,"test_task_metric":null,"test_mean_metric":null,"single_task":null,"steps":300,"seconds":1.0}"#,
        r#"{"name":"single-mnist","kind":"single","method":"scalarization","weights":[1.0,0.0],"task_metric":[0.95,null],"mean_metric":0.95,"single_task":0,"steps":300}"#,
        r#"{"name":"member-2","kind":"pbt","method":"scalarization","weights":[0.6,0.4],"task_metric":[0.93,0.83],"mean_metric":0.88,"steps":300}"#,
        r#"{"name":"uniform","kind":"uniform","method":"scalarization","weights":[0.5,0.5],"task_metric":[0.90,0.80],"mean_metric":0.85,"steps":300,"future_field":1}"#,
        r#"{"name":"pcgrad","kind":"method","method":"pcgrad","weights":null,"task_metric":[0.91,0.79],"mean_metric":0.85,"steps":300}"#,
        r#"{"name":"grid-p0.200","kind":"grid","method":"scalarization","weights":[0.2,0.8],"task_metric":[0.86,0.84],"mean_metric":0.85,"steps":300}"#,
        r#"{"name":"train-0.3","kind":"train","method":"scalarization","weights":[0.3,0.7],"task_metric":[0.88,0.82],"mean_metric":0.85,"steps":300}"#,
    ];
    write(dir, "results.jsonl", &(results.join("\n") + "\n"));
    let mut m = vec![r#"{"type":"something_new","run":"x"}"#.to_string()];
    let fractions = [0.5, 0.25, 0.4, 0.1];
    let means = [0.70, 0.80, 0.75, 0.85];
    for (k, (f, acc)) in fractions.iter().zip(means).enumerate() {
        let step = 100 * k as u64;
        m.push(format!(
            r#"{{"type":"train","run":"uniform","step":{step},"epoch":0.5,"lr":0.1,"loss":[1.0,2.0],"weights":[0.5,0.5],"images_per_s":100.0}}"#
        ));
        let layers: Vec<String> = (0..3)
            .map(|l| {
                format!(
                    r#"{{"name":"backbone.layer{l}","conflict_fraction":{},"mean_cosine":0.1,"cosines":[[1,0.1],[0.1,1]],"norms":[1,2],"magnitude_similarity":0.5}}"#,
                    (f + 0.1 * l as f64).min(1.0)
                )
            })
            .collect();
        m.push(format!(
            r#"{{"type":"conflict","run":"uniform","step":{step},"layers":[{}],"whole":{{"name":"backbone","conflict_fraction":{f},"mean_cosine":0.2,"cosines":[[1,0.2],[0.2,1]],"norms":[1,1],"magnitude_similarity":0.9}}}}"#,
            layers.join(",")
        ));
        // Evals land 10 steps after each conflict record: "the nearest following step".
        m.push(format!(
            r#"{{"type":"eval","run":"uniform","step":{},"epoch":1.0,"task_metric":[{acc},{acc}],"mean_metric":{acc},"loss":[0.5,0.5]}}"#,
            step + 10
        ));
    }
    for generation in 0..3u32 {
        for member in 0..4 {
            let p = 0.2 + 0.2 * member as f64 - 0.05 * generation as f64;
            m.push(format!(
                r#"{{"type":"pbt","run":"member-{member}","generation":{generation},"step":{},"weights":[{p},{}],"lr":null,"score":0.8,"exploited_from":null}}"#,
                100 * generation,
                1.0 - p
            ));
        }
    }
    write(dir, "metrics.jsonl", &(m.join("\n") + "\n"));
    write(
        dir,
        "pbt_schedule.json",
        r#"{"winner":"member-2","schedule":[{"step":0,"weights":[0.5,0.5],"lr":null},{"step":100,"weights":[0.55,0.45],"lr":null},{"step":200,"weights":[0.65,0.35],"lr":0.1}]}"#,
    );
}

/// The digits single-task baseline, in a folder whose task list is only ["digits"].
fn baseline_run(dir: &Path) {
    write(
        dir,
        "run.json",
        r#"{"command":"single","preset":null,"problem":"mdl","tasks":["digits"],"metric":"accuracy","model":"m","version":"0.1.0"}"#,
    );
    write(
        dir,
        "results.jsonl",
        r#"{"name":"single-digits","kind":"single","method":"scalarization","weights":[1.0],"task_metric":[0.80],"mean_metric":0.80,"single_task":0,"steps":300}"#,
    );
}

fn check_png(path: &Path) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(img.dimensions(), (960, 600), "{}", path.display());
    // The caption is text in the top band: some pixels there must be dark (the font works).
    let dark = (0..40)
        .flat_map(|y| (0..960).map(move |x| (x, y)))
        .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 128))
        .count();
    assert!(
        dark > 50,
        "{}: no caption text ({dark} dark pixels)",
        path.display()
    );
}

fn check_svg(path: &Path) {
    let s = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(s.trim_start().starts_with("<svg"), "{}", path.display());
    assert!(s.contains("</svg>"), "{}", path.display());
}

#[test]
fn report_writes_figures_and_delta_m_table() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let base = tmp.path().join("base");
    pbt_run(&run);
    baseline_run(&base);
    let out = report(&[&run, &base]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = run.join("report");
    for stem in [
        "metric_vs_p1",
        "pbt_weights",
        "conflicts",
        "conflict_vs_metric",
    ] {
        check_png(&dir.join(format!("{stem}.png")));
        check_svg(&dir.join(format!("{stem}.svg")));
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    // Baselines: mnist 0.95 (this run), digits 0.80 (--baselines).
    // member-2: 100/2 * ((0.93-0.95)/0.95 + (0.83-0.80)/0.80) = +0.822...
    // uniform: 50 * (0.90-0.95)/0.95 = -2.631...; grid-p0.800: 50 * (-0.01/0.95 - 0.06/0.8) = -4.276...
    let row = |name: &str| {
        md.lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no row {name} in\n{md}"))
            .to_string()
    };
    assert!(
        row("member-2").ends_with("| 93.00 | 83.00 | 88.00 | +0.82 |"),
        "{}",
        row("member-2")
    );
    assert!(
        row("uniform").ends_with("| 90.00 | 80.00 | 85.00 | -2.63 |"),
        "{}",
        row("uniform")
    );
    assert!(
        row("grid-p0.800").ends_with("| -4.28 |"),
        "{}",
        row("grid-p0.800")
    );
    assert!(
        row("pcgrad").contains("| method | pcgrad | — |"),
        "{}",
        row("pcgrad")
    );
    assert!(
        row("single-mnist").ends_with("| 95.00 | — | 95.00 | — |"),
        "{}",
        row("single-mnist")
    );
    // Row order: uniform, grid by p1, pbt, method, train, single.
    let order: Vec<usize> = [
        "uniform",
        "grid-p0.200",
        "grid-p0.800",
        "member-2",
        "pcgrad",
        "train-0.3",
        "single-mnist",
    ]
    .iter()
    .map(|n| md.find(&format!("| {n} |")).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}\n{md}");
    assert!(md.contains("Baselines: mnist 95.00, digits 80.00"), "{md}");
    assert!(md.contains("positive = better than single-task"));
    assert!(
        md.contains("Best grid point by validation mean: **grid-p0.200**"),
        "{md}"
    );
    // Pairs (fraction, next eval mean): (0.5,70) (0.25,80) (0.4,75) (0.1,85): r = -0.9959.
    assert!(md.contains("![conflict_vs_metric](conflict_vs_metric.png)"));
    let svg = std::fs::read_to_string(dir.join("conflict_vs_metric.svg")).unwrap();
    assert!(
        svg.contains("Pearson r = -0.996 (n = 4)"),
        "title missing from svg"
    );
    // The table is printed too.
    assert!(stdout.contains("| member-2 | pbt |"), "{stdout}");
}

#[test]
fn without_baselines_delta_m_is_na() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    pbt_run(&run);
    let out = report(&[&run]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(run.join("report/report.md")).unwrap();
    let uniform = md.lines().find(|l| l.starts_with("| uniform |")).unwrap();
    assert!(uniform.ends_with("| n/a |"), "{uniform}");
    assert!(md.contains("no single-task baseline for digits"), "{md}");
}

#[test]
fn missing_data_skips_figures_with_reasons_and_heatmap_for_many_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run3");
    write(
        &run,
        "run.json",
        r#"{"command":"conflicts","preset":null,"problem":"mtl","tasks":["a","b","c"],"metric":"accuracy","model":"m","version":"0.1.0"}"#,
    );
    write(
        &run,
        "results.jsonl",
        r#"{"name":"uniform","kind":"uniform","method":"scalarization","weights":[0.33,0.33,0.34],"task_metric":[0.5,0.6,0.7],"mean_metric":0.6,"steps":10}"#,
    );
    // 12 layers -> heatmap; no eval records -> no scatter.
    let layers: Vec<String> = (0..12)
        .map(|l| {
            format!(
                r#"{{"name":"backbone.block{l}","conflict_fraction":{},"mean_cosine":0.0}}"#,
                l as f64 / 12.0
            )
        })
        .collect();
    let rec = |step: u32| {
        format!(
            r#"{{"type":"conflict","run":"uniform","step":{step},"layers":[{}],"whole":null}}"#,
            layers.join(",")
        )
    };
    write(&run, "metrics.jsonl", &format!("{}\n{}\n", rec(0), rec(10)));
    let out = report(&[&run]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("metric_vs_p1: skipped, the run has 3 tasks"),
        "{stdout}"
    );
    assert!(
        stdout.contains("pbt_weights: skipped, metrics.jsonl has no pbt records"),
        "{stdout}"
    );
    assert!(stdout.contains("conflict_vs_metric: skipped"), "{stdout}");
    let md = std::fs::read_to_string(run.join("report/report.md")).unwrap();
    assert!(md.contains("- metric_vs_p1: skipped"), "{md}");
    assert!(!run.join("report/metric_vs_p1.png").exists());
    check_png(&run.join("report/conflicts.png"));
    check_svg(&run.join("report/conflicts.svg"));
}

#[test]
fn errors_name_the_path_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let out = report(&[&missing]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&missing.display().to_string()), "{err}");

    let run = tmp.path().join("norun");
    write(&run, "results.jsonl", "");
    let err = String::from_utf8_lossy(&report(&[&run]).stderr).to_string();
    assert!(err.contains("run.json"), "{err}");

    let run = tmp.path().join("bad");
    pbt_run(&run);
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "{\"type\":\"eval\", oops";
    write(&run, "metrics.jsonl", &lines.join("\n"));
    let out = report(&[&run]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metrics.jsonl: line 3"), "{err}");
}
