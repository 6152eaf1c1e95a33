//! The results table: ordering, single-task baselines and Delta_m.

use std::collections::BTreeMap;

use crate::report::read::{RunFolder, RunResult};

/// Delta_m in percent: `(100/T) * sum_t (M_t - B_t) / B_t` for higher-is-better metrics
/// (positive = better than the single-task baselines). `None` when lengths differ, a value is
/// missing or a baseline is zero.
pub fn delta_m(metrics: &[Option<f64>], baselines: &[Option<f64>]) -> Option<f64> {
    if metrics.is_empty() || metrics.len() != baselines.len() {
        return None;
    }
    let mut sum = 0.0;
    for (m, b) in metrics.iter().zip(baselines) {
        let (m, b) = ((*m)?, (*b)?);
        if b == 0.0 || !m.is_finite() || !b.is_finite() {
            return None;
        }
        sum += (m - b) / b;
    }
    Some(100.0 * sum / metrics.len() as f64)
}

/// Single-task baselines by task name: the metric of each "single" result on its task.
/// Earlier folders win (the run folder first, then `--baselines` in order).
pub fn baselines(folders: &[&RunFolder]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for f in folders {
        for r in f.results.iter().filter(|r| r.kind == "single") {
            let Some(t) = r.single_task else { continue };
            let (Some(name), Some(Some(v))) = (f.info.tasks.get(t), r.task_metric.get(t)) else {
                continue;
            };
            out.entry(name.clone()).or_insert(*v);
        }
    }
    out
}

/// Sort key: uniform, grid (by p_1), pbt, method, train, single, anything else.
fn order(r: &RunResult) -> (usize, f64) {
    let rank = ["uniform", "grid", "pbt", "method", "train", "single"]
        .iter()
        .position(|k| *k == r.kind)
        .unwrap_or(6);
    let p1 = r
        .weights
        .as_ref()
        .and_then(|w| w.first().copied())
        .unwrap_or(0.0);
    (rank, if r.kind == "grid" { p1 } else { 0.0 })
}

/// The results in table order (stable within a kind).
pub fn sorted(results: &[RunResult]) -> Vec<&RunResult> {
    let mut v: Vec<&RunResult> = results.iter().collect();
    v.sort_by(|a, b| {
        let (ka, kb) = (order(a), order(b));
        ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
    });
    v
}

fn pct(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{:.2}", 100.0 * v),
        _ => "—".to_string(),
    }
}

/// The Markdown table (with the Delta_m convention line under it).
pub fn markdown(tasks: &[String], results: &[RunResult], base: &BTreeMap<String, f64>) -> String {
    let b: Vec<Option<f64>> = tasks.iter().map(|t| base.get(t).copied()).collect();
    let mut s = String::from("| name | kind | method | weights |");
    for t in tasks {
        s += &format!(" {t} (%) |");
    }
    s += " mean (%) | Δm (%) |\n|---|---|---|---|";
    s += &"---:|".repeat(tasks.len() + 2);
    s += "\n";
    for r in sorted(results) {
        let weights = match &r.weights {
            Some(w) => w
                .iter()
                .map(|x| format!("{x:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            None => "—".into(),
        };
        s += &format!(
            "| {} | {} | {} | {} |",
            r.name,
            r.kind,
            r.method.as_deref().unwrap_or("—"),
            weights
        );
        for m in &r.task_metric {
            s += &format!(" {} |", pct(*m));
        }
        let dm = if r.kind == "single" {
            "—".to_string()
        } else {
            match delta_m(&r.task_metric, &b) {
                Some(d) => format!("{d:+.2}"),
                None => "n/a".into(),
            }
        };
        s += &format!(" {} | {} |\n", pct(r.mean_metric), dm);
    }
    s += "\nMetrics are validation metrics in percent (higher is better). \
          Δm = (100/T) · Σ_t (M_t − B_t) / B_t against the single-task baselines B_t \
          (results of kind \"single\"); positive = better than single-task. ";
    let missing: Vec<&str> = tasks
        .iter()
        .filter(|t| !base.contains_key(*t))
        .map(|t| t.as_str())
        .collect();
    if missing.is_empty() {
        let shown: Vec<String> = tasks
            .iter()
            .map(|t| format!("{t} {:.2}", 100.0 * base[t]))
            .collect();
        s += &format!("Baselines: {}.\n", shown.join(", "));
    } else {
        s += &format!(
            "Δm is n/a: no single-task baseline for {} (pass --baselines DIR).\n",
            missing.join(", ")
        );
    }
    s
}

/// The best grid result by validation mean metric, if any.
pub fn best_grid(results: &[RunResult]) -> Option<&RunResult> {
    results
        .iter()
        .filter(|r| r.kind == "grid")
        .filter(|r| r.mean_metric.is_some_and(f64::is_finite))
        .max_by(|a, b| a.mean_metric.unwrap().total_cmp(&b.mean_metric.unwrap()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str, kind: &str, w: Option<Vec<f64>>, m: Vec<Option<f64>>) -> RunResult {
        RunResult {
            name: name.into(),
            kind: kind.into(),
            method: Some("scalarization".into()),
            weights: w,
            mean_metric: Some(m.iter().flatten().sum::<f64>() / m.len() as f64),
            task_metric: m,
            single_task: None,
            steps: None,
        }
    }

    #[test]
    fn delta_m_known_values() {
        // (0.9-0.8)/0.8 = 0.125, (0.6-0.75)/0.75 = -0.2 -> 100 * (-0.075) / 2 = -3.75.
        let d = delta_m(&[Some(0.9), Some(0.6)], &[Some(0.8), Some(0.75)]).unwrap();
        assert!((d + 3.75).abs() < 1e-12, "{d}");
        // Equal to the baselines -> 0; 10% better on every task -> +10.
        assert_eq!(delta_m(&[Some(0.5)], &[Some(0.5)]), Some(0.0));
        let d = delta_m(&[Some(0.55), Some(0.88)], &[Some(0.5), Some(0.8)]).unwrap();
        assert!((d - 10.0).abs() < 1e-9, "{d}");
        assert_eq!(delta_m(&[Some(0.5), None], &[Some(0.5), Some(0.5)]), None);
        assert_eq!(delta_m(&[Some(0.5)], &[Some(0.0)]), None);
        assert_eq!(delta_m(&[Some(0.5)], &[Some(0.5), Some(0.5)]), None);
    }

    #[test]
    fn rows_are_ordered_by_kind_then_p1() {
        let rs = vec![
            res("single-a", "single", None, vec![Some(0.9), None]),
            res(
                "g7",
                "grid",
                Some(vec![0.7, 0.3]),
                vec![Some(0.95), Some(0.8)],
            ),
            res("pcgrad", "method", None, vec![Some(0.9), Some(0.8)]),
            res(
                "g2",
                "grid",
                Some(vec![0.2, 0.8]),
                vec![Some(0.9), Some(0.8)],
            ),
            res(
                "u",
                "uniform",
                Some(vec![0.5, 0.5]),
                vec![Some(0.9), Some(0.8)],
            ),
            res("w", "pbt", Some(vec![0.4, 0.6]), vec![Some(0.9), Some(0.8)]),
        ];
        let names: Vec<&str> = sorted(&rs).iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["u", "g2", "g7", "w", "pcgrad", "single-a"]);
        assert_eq!(best_grid(&rs).unwrap().name, "g7");
    }
}
