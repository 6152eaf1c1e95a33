#!/usr/bin/env python3
"""Cross-checks scalarize-nn against PyTorch, tensor by tensor.

    # a random batch for a model (images F32 [N,C,H,W], labels.{t} per head)
    python3 interop_check.py make-batch --model resnet26:w0.25 --heads 10,10 --n 8 --out B.safetensors
    # our side: scalarize inspect --model ... --heads ... --checkpoint W.safetensors --batch B.safetensors --out O.safetensors
    python3 interop_check.py check --model resnet26:w0.25 --heads 10,10 \
        --checkpoint W.safetensors --batch B.safetensors --ours O.safetensors [--weights 0.7,0.3]
    # a PyTorch-initialised checkpoint (to load on our side)
    python3 interop_check.py export --model vit-ti:p4:d2 --heads 10 --out W.safetensors

`check` loads W into the PyTorch twin of the model (crates/nn/python/scalarize_torch.py) by
name, runs one training-mode forward (BN batch statistics), the loss sum_t p_t * loss_t and
its backward, and compares logits, losses, every `grad.{name}` and the updated BN running
statistics (`state.{name}`) with O. It prints the worst
relative errors and exits 1 if any exceeds the tolerance. Needs torch, numpy, safetensors.
"""

import argparse
import os
import sys

import numpy as np
import torch
from safetensors.numpy import load_file as np_load
from safetensors.numpy import save_file as np_save

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scalarize_torch as st  # noqa: E402


def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / (np.linalg.norm(b) + 1e-12)) if b.size else 0.0


def make_batch(args):
    s = st.parse_model(args.model)
    heads = st.parse_heads(args.heads)
    rng = np.random.default_rng(args.seed)
    n, r, c = args.n, s["resolution"], s["channels"]
    batch = {"images": rng.standard_normal((n, c, r, r)).astype(np.float32)}
    for t, (kind, k) in enumerate(heads):
        if kind == "c":
            batch[f"labels.{t}"] = rng.integers(0, k, size=n).astype(np.int64)
        elif kind == "a":
            batch[f"labels.{t}"] = rng.integers(0, 2, size=(n, k)).astype(np.float32)
        else:
            batch[f"labels.{t}"] = rng.standard_normal((n, k, r, r)).astype(np.float32)
    np_save(batch, args.out)


def export(args):
    torch.manual_seed(args.seed)
    m = st.build(args.model, args.heads)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, args.out)


def check(args):
    torch.manual_seed(0)
    m = st.load_checkpoint(st.build(args.model, args.heads), args.checkpoint)
    m.train()
    batch = np_load(args.batch)
    ours = np_load(args.ours)
    x = torch.from_numpy(batch["images"])
    outs = m(x)
    t_count = len(outs)
    weights = [float(w) for w in args.weights.split(",")] if args.weights else [1.0 / t_count] * t_count
    losses = [
        st.head_loss(kind, o, torch.from_numpy(batch[f"labels.{t}"]))
        for t, ((kind, _), o) in enumerate(zip(m.head_kinds, outs))
    ]
    total = sum(w * l for w, l in zip(weights, losses))
    total.backward()

    rows = []
    for t, o in enumerate(outs):
        rows.append((f"logits.{t}", rel_err(ours[f"logits.{t}"], o.detach().numpy())))
        rows.append((f"loss.{t}", rel_err(ours[f"loss.{t}"], losses[t].detach().numpy())))
    rows.append(("loss", rel_err(ours["loss"], total.detach().numpy())))
    missing = []
    for name, p in m.named_parameters():
        key = f"grad.{name}"
        if key not in ours:
            missing.append(key)
            continue
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        rows.append((key, rel_err(ours[key], g.numpy())))
    for name, b in m.named_buffers():
        key = f"state.{name}"
        if name.endswith("num_batches_tracked"):
            continue
        if key not in ours:
            missing.append(key)
            continue
        rows.append((key, rel_err(ours[key], b.numpy())))
    extra = sorted(k for k in ours if k.startswith("grad.") and k[5:] not in dict(m.named_parameters()))
    rows.sort(key=lambda r: -r[1])
    worst = rows[0][1] if rows else 0.0
    print(f"compared {len(rows)} tensors; worst relative errors:")
    for name, e in rows[:8]:
        print(f"  {e:.3e}  {name}")
    ok = worst <= args.rtol and not missing and not extra
    if missing:
        print(f"missing in ours: {missing}")
    if extra:
        print(f"unexpected in ours: {extra}")
    print(("OK" if ok else "MISMATCH") + f" (tolerance {args.rtol:g})")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("make-batch", "export", "check"):
        p = sub.add_parser(name)
        p.add_argument("--model", required=True)
        p.add_argument("--heads", required=True)
        if name == "make-batch":
            p.add_argument("--n", type=int, default=8)
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--out", required=True)
        elif name == "export":
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--out", required=True)
        else:
            p.add_argument("--checkpoint", required=True)
            p.add_argument("--batch", required=True)
            p.add_argument("--ours", required=True)
            p.add_argument("--weights", default=None)
            p.add_argument("--rtol", type=float, default=1e-3)
    args = ap.parse_args()
    if args.cmd == "make-batch":
        make_batch(args)
    elif args.cmd == "export":
        export(args)
    else:
        sys.exit(check(args))


if __name__ == "__main__":
    main()
