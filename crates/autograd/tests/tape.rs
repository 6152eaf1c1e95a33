//! The tape's contract on a small multi-head network: multi-root backward, gradients at a
//! shared representation, T backward passes over one forward, no-grad mode, threads.

mod common;

use common::{Rng, assert_close};
use scalarize_autograd::{
    Backward, Gradients, ParamStore, Tensor, backward_from, is_grad_enabled, no_grad,
};

const TASKS: usize = 3;

/// Backbone (linear → layer norm → gelu → linear → gelu) and one linear head per task.
fn model(rng: &mut Rng) -> ParamStore {
    let mut s = ParamStore::new();
    let mut add = |name: &str, shape: &[usize], s: &mut ParamStore| {
        s.add_parameter(name, rng.tensor(shape)).unwrap();
    };
    add("backbone.fc1.weight", &[6, 4], &mut s);
    add("backbone.fc1.bias", &[6], &mut s);
    add("backbone.norm.weight", &[6], &mut s);
    add("backbone.norm.bias", &[6], &mut s);
    add("backbone.fc2.weight", &[5, 6], &mut s);
    add("backbone.fc2.bias", &[5], &mut s);
    for t in 0..TASKS {
        add(&format!("heads.{t}.weight"), &[3, 5], &mut s);
        add(&format!("heads.{t}.bias"), &[3], &mut s);
    }
    s
}

/// Returns the shared representation z and the per-task logits.
fn forward(s: &ParamStore, x: &Tensor) -> (Tensor, Vec<Tensor>) {
    let p = |n: &str| s.get(n).unwrap().clone();
    let h = x
        .linear(&p("backbone.fc1.weight"), Some(&p("backbone.fc1.bias")))
        .unwrap()
        .layer_norm(&p("backbone.norm.weight"), &p("backbone.norm.bias"), 1e-6)
        .unwrap()
        .gelu()
        .unwrap();
    let z = h
        .linear(&p("backbone.fc2.weight"), Some(&p("backbone.fc2.bias")))
        .unwrap()
        .gelu()
        .unwrap();
    let logits = (0..TASKS)
        .map(|t| {
            z.linear(
                &p(&format!("heads.{t}.weight")),
                Some(&p(&format!("heads.{t}.bias"))),
            )
            .unwrap()
        })
        .collect();
    (z, logits)
}

fn targets(t: usize) -> Vec<i64> {
    (0..7).map(|i| ((i + t) % 3) as i64).collect()
}

fn losses(logits: &[Tensor]) -> Vec<Tensor> {
    logits
        .iter()
        .enumerate()
        .map(|(t, l)| l.cross_entropy(&targets(t), -100).unwrap())
        .collect()
}

fn grad_of(s: &ParamStore, g: &Gradients, name: &str) -> Vec<f32> {
    s.grad(g, name)
        .unwrap()
        .map(|t| t.to_vec())
        .unwrap_or_else(|| vec![0.0; s.get(name).unwrap().numel()])
}

fn setup() -> (ParamStore, Tensor, Rng) {
    let mut rng = Rng::new(42);
    let s = model(&mut rng);
    let x = rng.tensor(&[7, 4]);
    (s, x, rng)
}

#[test]
fn multi_root_equals_sum_of_separate_passes() {
    let (s, x, mut rng) = setup();
    let (_, logits) = forward(&s, &x);
    let cots: Vec<Tensor> = logits.iter().map(|l| rng.cotangent(l.shape())).collect();
    let roots: Vec<(&Tensor, &Tensor)> = logits.iter().zip(&cots).collect();
    let joint = backward_from(&roots).unwrap();
    let separate: Vec<Gradients> = logits
        .iter()
        .zip(&cots)
        .map(|(l, c)| l.backward_with(c).unwrap())
        .collect();
    for e in s.trainable() {
        let mut sum = vec![0.0f32; e.tensor().numel()];
        for g in &separate {
            for (a, b) in sum.iter_mut().zip(grad_of(&s, g, e.name())) {
                *a += b;
            }
        }
        assert_close(e.name(), &grad_of(&s, &joint, e.name()), &sum, 1e-5);
    }
    // Heads only see their own root.
    let h0 = grad_of(&s, &separate[1], "heads.0.weight");
    assert!(h0.iter().all(|&v| v == 0.0));
}

#[test]
fn gradient_at_shared_representation_chains_to_parameters() {
    let (s, x, _) = setup();
    let (z, logits) = forward(&s, &x);
    let ls = losses(&logits);
    let one = Tensor::scalar(1.0);
    for (t, loss) in ls.iter().enumerate() {
        let full = loss.backward().unwrap();
        let at_z = Backward::new().root(loss, &one).stop_at(&z).run().unwrap();
        let gz = at_z.get(&z).expect("gradient at z").clone();
        assert_eq!(gz.shape(), z.shape());
        // stop_at: the backbone received nothing, the head did.
        assert!(s.grad(&at_z, "backbone.fc1.weight").unwrap().is_none());
        let head = format!("heads.{t}.weight");
        assert_close(
            &head,
            &grad_of(&s, &at_z, &head),
            &grad_of(&s, &full, &head),
            1e-6,
        );
        // retain gives the same gradient at z and still reaches the backbone.
        let retained = Backward::new().root(loss, &one).retain(&z).run().unwrap();
        assert_close(
            "retain z",
            &retained.get(&z).unwrap().to_vec(),
            &gz.to_vec(),
            1e-6,
        );
        // Backbone gradients = (dL/dz) pulled back through the backbone Jacobian.
        let chained = z.backward_with(&gz).unwrap();
        for e in s.trainable().filter(|e| e.name().starts_with("backbone.")) {
            let n = e.name();
            assert_close(n, &grad_of(&s, &chained, n), &grad_of(&s, &full, n), 1e-5);
            assert_close(n, &grad_of(&s, &retained, n), &grad_of(&s, &full, n), 1e-6);
        }
    }
    // dL/dz for a linear head is (dL/dlogits)·W: check task 0 against that product.
    let l0 = &ls[0];
    let g = Backward::new()
        .root(l0, &one)
        .retain(&logits[0])
        .stop_at(&z)
        .run()
        .unwrap();
    let dlogits = g.get(&logits[0]).unwrap().detach();
    let w = s.get("heads.0.weight").unwrap().detach();
    let expected = dlogits.matmul(&w).unwrap();
    assert_close(
        "dz = dlogits·W",
        &g.get(&z).unwrap().to_vec(),
        &expected.to_vec(),
        1e-5,
    );
}

#[test]
fn t_backward_passes_over_one_forward_match_t_forwards() {
    let (s, x, _) = setup();
    let (_, logits) = forward(&s, &x);
    let ls = losses(&logits);
    let shared: Vec<Gradients> = ls.iter().map(|l| l.backward().unwrap()).collect();
    // Running the same pass again gives the same answer: backward does not consume the tape.
    let again = ls[0].backward().unwrap();
    for (t, shared_t) in shared.iter().enumerate() {
        let (_, fresh_logits) = forward(&s, &x);
        let fresh = losses(&fresh_logits)[t].backward().unwrap();
        for e in s.trainable() {
            let n = e.name();
            assert_close(n, &grad_of(&s, shared_t, n), &grad_of(&s, &fresh, n), 1e-6);
        }
        let flat_shared = s.flat_grads(shared_t);
        let flat_fresh = s.flat_grads(&fresh);
        assert_eq!(flat_shared.len(), s.num_trainable_elements());
        assert_close("flat", &flat_shared, &flat_fresh, 1e-6);
    }
    assert_eq!(s.flat_grads(&again), s.flat_grads(&shared[0]));
}

#[test]
fn no_grad_records_nothing() {
    let (s, x, _) = setup();
    assert!(is_grad_enabled());
    {
        let _g = no_grad();
        assert!(!is_grad_enabled());
        {
            let _inner = no_grad();
            assert!(!is_grad_enabled());
        }
        assert!(!is_grad_enabled(), "nested guard must not re-enable early");
        let (z, logits) = forward(&s, &x);
        assert!(!z.is_tracked());
        assert!(logits.iter().all(|l| !l.is_tracked()));
        let loss = losses(&logits).remove(0);
        assert!(!loss.is_tracked());
        assert!(loss.backward().is_err());
        // Parameters stay leaves; only recording is off.
        assert!(s.get("heads.0.weight").unwrap().is_leaf());
    }
    assert!(is_grad_enabled());
    let (z, _) = forward(&s, &x);
    assert!(z.is_tracked());
    // Values are identical with and without recording.
    let z_eval = {
        let _g = no_grad();
        forward(&s, &x).0
    };
    assert_eq!(z.to_vec(), z_eval.to_vec());
}

#[test]
fn detach_and_requires_grad() {
    let mut rng = Rng::new(3);
    let w = rng.tensor(&[3, 3]).requires_grad();
    let x = rng.tensor(&[2, 3]).requires_grad();
    let y = x.matmul(&w).unwrap();
    let cut = y.detach().mul(&y).unwrap().sum().unwrap(); // only the right factor carries gradient
    let g = cut.backward().unwrap();
    // d/dW sum(c ⊙ (xW)) with c = y (constant) = xᵀ·y.
    let expected = x.detach().matmul_t(&y.detach(), true, false).unwrap();
    assert_close(
        "detach",
        &g.get(&w).unwrap().to_vec(),
        &expected.to_vec(),
        1e-5,
    );
    assert!(g.get(&x).is_some(), "requires_grad input gets a gradient");
    assert!(!y.detach().is_tracked());
}

#[test]
fn backward_errors() {
    let (s, x, mut rng) = setup();
    let (z, _) = forward(&s, &x);
    assert!(
        z.backward().is_err(),
        "non-scalar backward needs a cotangent"
    );
    let wrong = rng.cotangent(&[1, 2]);
    assert!(z.backward_with(&wrong).is_err());
    let untracked = Tensor::scalar(1.0);
    assert!(
        Backward::new()
            .root(&z, &rng.cotangent(z.shape()))
            .retain(&untracked)
            .run()
            .is_err()
    );
    assert!(Backward::new().run().is_err());
}

#[test]
fn types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tensor>();
    check::<ParamStore>();
    check::<Gradients>();
}

#[test]
fn models_on_several_threads() {
    let (s, x, _) = setup();
    let reference = s.flat_grads(&losses(&forward(&s, &x).1)[1].backward().unwrap());
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let (s, x) = (s.clone(), x.clone());
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for _ in 0..5 {
                    let g = losses(&forward(&s, &x).1)[1].backward().unwrap();
                    out = s.flat_grads(&g);
                }
                out
            })
        })
        .collect();
    for h in handles {
        assert_close("thread", &h.join().unwrap(), &reference, 1e-6);
    }
}

#[test]
fn very_long_chains_backward_and_drop_without_recursion() {
    let w = Tensor::scalar(1.0).requires_grad();
    let mut y = w.clone();
    for _ in 0..100_000 {
        y = y.scale(1.0).unwrap();
    }
    let g = y.backward().unwrap();
    assert_eq!(g.get(&w).unwrap().item().unwrap(), 1.0);
    drop(y); // would overflow the test thread's stack with a recursive drop
}

#[test]
fn no_grad_is_per_thread() {
    let (s, x, _) = setup();
    let _guard = no_grad();
    let tracked_elsewhere = std::thread::spawn(move || {
        assert!(is_grad_enabled());
        forward(&s, &x).0.is_tracked()
    })
    .join()
    .unwrap();
    assert!(
        tracked_elsewhere,
        "another thread's no_grad must not affect this one"
    );
    assert!(!is_grad_enabled());
}
