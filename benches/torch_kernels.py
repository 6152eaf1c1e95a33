#!/usr/bin/env python3
"""PyTorch baselines for scalarize's two method kernels, timed on the same GPU.

Called by benches/weighted_loss.rs and benches/grad_gram.rs (GPU groups) with the shapes they
use; can also be run alone:

    python3 benches/torch_kernels.py ce --n 65536 --sizes 1000
    python3 benches/torch_kernels.py gram --t 8 --p 25000000 --segments 160

Prints one line per measurement, `RESULT <name> <median ms> <GB/s>`, counting bytes the same
way as the Rust benchmarks (each input read once, each output written once).
  ce:   torch_ce_unfused  log_softmax / nll_loss (ignore_index=-100) per head, weighted sum,
                          backward (what a PyTorch training script does);
        torch_copy        a device copy of the logits (the GPU's copy bandwidth).
  gram: torch_gram_per_segment  one G[:, a:b] @ G[:, a:b].T per segment (f32, TF32 off);
        torch_gram_whole        one G @ G.T on the whole matrix (no per-layer cosines);
        torch_copy              a device copy of half of G (same bytes as reading G).
Exit status 2 (with the reason on stderr) when torch or a CUDA device is missing.
"""

import argparse
import sys


def median_ms(torch, fn, reps):
    """Median of `reps` timed calls (CUDA events) after two warm-up calls."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def layer_segments(p, l):
    """Same as layer_segments in benches/grad_gram.rs: big segments alternating with 64 floats."""
    pairs = l // 2
    big = (p - pairs * 64) // pairs
    ends, e = [], 0
    for _ in range(pairs):
        e += big
        ends.append(e)
        e += 64
        ends.append(e)
    ends[-1] = p
    return ends


def report(name, ms, nbytes):
    print(f"RESULT {name} {ms:.4f} {nbytes / (ms * 1e-3) / 1e9:.2f}", flush=True)


def bench_ce(torch, args):
    import torch.nn.functional as F

    sizes = [int(s) for s in args.sizes.split(",")]
    n, t, w = args.n, len(sizes), sum(sizes)
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    logits = (torch.rand(n, w, device=dev, generator=gen) * 10 - 5).requires_grad_(True)
    targets = torch.stack(
        [torch.randint(0, c, (n,), device=dev, generator=gen) for c in sizes], dim=1
    )
    ignore = torch.rand(n, t, device=dev, generator=gen) < 0.05
    targets[ignore] = -100
    weights = torch.rand(t, device=dev, generator=gen) * 0.9 + 0.1
    offsets = [0]
    for c in sizes:
        offsets.append(offsets[-1] + c)

    def unfused():
        logits.grad = None
        loss = 0.0
        for k in range(t):
            lp = F.log_softmax(logits[:, offsets[k] : offsets[k + 1]], dim=1)
            loss = loss + weights[k] * F.nll_loss(lp, targets[:, k], ignore_index=-100)
        loss.backward()

    nbytes = n * w * 4 * 2 + n * t * 8
    report("torch_ce_unfused", median_ms(torch, unfused, args.reps), nbytes)
    src = logits.detach()
    dst = torch.empty_like(src)
    report("torch_copy", median_ms(torch, lambda: dst.copy_(src), args.reps), 2 * n * w * 4)


def bench_gram(torch, args):
    torch.backends.cuda.matmul.allow_tf32 = False
    t, p = args.t, args.p
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    g = torch.rand(t, p, device=dev, generator=gen) * 2 - 1
    ends = layer_segments(p, args.segments)
    starts = [0] + ends[:-1]

    def per_segment():
        return [g[:, a:b] @ g[:, a:b].T for a, b in zip(starts, ends)]

    nbytes = t * p * 4 + len(ends) * t * t * 8
    report("torch_gram_per_segment", median_ms(torch, per_segment, args.reps), nbytes)
    report("torch_gram_whole", median_ms(torch, lambda: g @ g.T, args.reps), t * p * 4 + t * t * 4)
    half = g.reshape(-1)[: t * p // 2]
    dst = torch.empty_like(half)
    report("torch_copy", median_ms(torch, lambda: dst.copy_(half), args.reps), 2 * half.numel() * 4)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="kernel", required=True)
    ce = sub.add_parser("ce")
    ce.add_argument("--n", type=int, default=65536)
    ce.add_argument("--sizes", default="1000", help="comma-separated classes per head")
    gr = sub.add_parser("gram")
    gr.add_argument("--t", type=int, default=8)
    gr.add_argument("--p", type=int, default=25_000_000)
    gr.add_argument("--segments", type=int, default=160)
    for sp in (ce, gr):
        sp.add_argument("--reps", type=int, default=21)
    args = ap.parse_args()
    try:
        import torch
    except ImportError as e:
        print(f"torch is not installed: {e}", file=sys.stderr)
        sys.exit(2)
    if not torch.cuda.is_available():
        print("torch sees no CUDA device", file=sys.stderr)
        sys.exit(2)
    if args.kernel == "ce":
        bench_ce(torch, args)
    else:
        bench_gram(torch, args)


if __name__ == "__main__":
    main()
