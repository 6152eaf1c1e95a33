#!/usr/bin/env python3
"""PyTorch side of benches/train_step.rs: images/s of one training step (batch 64, 32x32, two
10-class heads, SGD momentum 0.9, weight decay 5e-4) for a scalarize model spec, using the
PyTorch twins in crates/nn/python/scalarize_torch.py (same layers, names and shapes).

    python3 benches/train_step_torch.py --model resnet26:w0.25 --steps 5 --threads 2
"""

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "nn", "python"))
import scalarize_torch as st  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet26:w0.25")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matrix products (GPU)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.manual_seed(0)
    dev = torch.device(args.device)
    m = st.build(args.model, "10,10").to(dev)
    m.train()
    r = st.parse_model(args.model)["resolution"]
    x = (torch.rand(args.batch, 3, r, r) * 2 - 1).to(dev)
    labels = [torch.randint(0, 10, (args.batch,)).to(dev) for _ in range(2)]
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        outs = m(x)
        loss = 0.5 * F.cross_entropy(outs[0], labels[0]) + 0.5 * F.cross_entropy(outs[1], labels[1])
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(2):
        step()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        loss = step()  # .item() synchronises a GPU step
    secs = time.perf_counter() - t0
    cpu = time.process_time() - c0
    ips = args.steps * args.batch / secs
    print(
        f"pytorch    {args.model:<22} {ips:8.1f} images/s  ({secs * 1e3 / args.steps:.1f} ms/step, "
        f"cpu {cpu * 1e3 / args.steps:.1f} ms/step, "
        f"final loss {loss:.3f}, torch {torch.__version__}, {args.device}, "
        f"{torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
