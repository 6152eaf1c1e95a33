//! A standalone PBT run: three "tasks" weighted by p on the simplex, and a learning rate.
//!
//! ```text
//! cargo run -p scalarize-pbt --example toy -- [RUN_DIR]
//! ```
//! Kill it (Ctrl-C) and start it again with the same RUN_DIR: it resumes where it stopped.

use std::path::{Path, PathBuf};

use scalarize_pbt::{BoxError, Domain, Hyperparams, Interval, Pbt, SearchSpace, Trainable};
use serde::{Deserialize, Serialize};

/// Parameters `theta` trained by gradient descent on `sum_t p_t |theta - e_t|^2`; the
/// validation score is `-|theta - target|^2`, best when `p = target` and training converged.
#[derive(Serialize, Deserialize)]
struct Toy {
    theta: Vec<f64>,
    p: Vec<f64>,
    lr: f64,
}

const TARGET: [f64; 3] = [0.5, 0.3, 0.2];

impl Trainable for Toy {
    fn set_hyperparameters(&mut self, hp: &Hyperparams) -> Result<(), BoxError> {
        self.p = hp.vector("p").ok_or("missing p")?.to_vec();
        self.lr = hp.f64("lr").ok_or("missing lr")?;
        Ok(())
    }
    fn hyperparameters(&self) -> Hyperparams {
        Hyperparams::new()
            .with("p", self.p.clone())
            .with("lr", self.lr)
    }
    fn train(&mut self, interval: &Interval) -> Result<(), BoxError> {
        for _ in 0..interval.units {
            for (th, p) in self.theta.iter_mut().zip(&self.p) {
                *th -= self.lr * 2.0 * (*th - p);
            }
        }
        Ok(())
    }
    fn evaluate(&mut self) -> Result<f64, BoxError> {
        Ok(-self
            .theta
            .iter()
            .zip(TARGET)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>())
    }
    fn save(&mut self, path: &Path) -> Result<(), BoxError> {
        Ok(std::fs::write(path, serde_json::to_vec(self)?)?)
    }
    fn load(&mut self, path: &Path) -> Result<(), BoxError> {
        *self = serde_json::from_slice(&std::fs::read(path)?)?;
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("scalarize-pbt-toy"));
    let space = SearchSpace::new()
        .with("p", Domain::simplex_with_floor(3, 0.01))
        .with("lr", Domain::log_uniform(1e-3, 0.5));
    let pbt = Pbt::builder(&dir, space)
        .population(8)
        .workers(4)
        .interval(5)
        .budget_units(8 * 5 * 30)
        .seed(1)
        .build()?;
    let report = pbt.run(|_member| {
        Ok(Toy {
            theta: vec![0.0; 3],
            p: vec![1.0 / 3.0; 3],
            lr: 0.1,
        })
    })?;
    let best = report.best_member().ok_or("no member finished")?;
    println!("run folder: {}", dir.display());
    print!("{}", report.summary_table());
    println!(
        "best member {} score {:.6} with {}",
        best.member,
        best.score.unwrap_or(f64::NAN),
        best.hp
    );
    println!("best member's schedule (step -> hyperparameters):");
    for e in &report.best_schedule {
        println!("  {:>4} -> {}", e.step, e.hp);
    }
    println!(
        "{} exploit/explore decisions; full report in {}/report.json",
        report.policy.len(),
        dir.display()
    );
    pbt.store()?.export_json(&dir.join("report.json"))?;
    Ok(())
}
