#!/usr/bin/env bash
# Builds everything scripts/gpu-check.sh runs (the CLI, every test target that needs CUDA, the
# GPU benchmarks) in release and packs the stripped executables into .gpu-bundle/, for a GPU
# machine with no Rust toolchain and no package registry (this workplace's device machines):
#
#     scripts/gpu-bundle.sh        # here, where cargo works (about 70 MB stripped, 11 MB packed)
#     scripts/gpu-check.sh         # there, with .gpu-bundle carried: no cargo, so it unpacks
#                                  # the bundle and runs the same steps from it
#
# Tests and benchmarks find files through paths fixed at compile time (CARGO_MANIFEST_DIR,
# CARGO_BIN_EXE_scalarize), so the build goes to this checkout's target/ and the manifest
# records the checkout's path; gpu-check.sh links that path to its own checkout when they
# differ. The kernels' CUDA sources are compiled into the executables, so the bundle tests the
# sources it was built from: rebuild it after any change.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
# shellcheck source=scripts/gpu-targets.sh
source scripts/gpu-targets.sh
BUNDLE="${SCALARIZE_GPU_BUNDLE:-.gpu-bundle}"
export CARGO_TARGET_DIR="$ROOT/target"

json="$(mktemp)"
meta="$(mktemp)"
trap 'rm -f "$json" "$meta"' EXIT
fmt=(--release --locked --message-format=json-render-diagnostics)
cargo build "${fmt[@]}" --bin scalarize >>"$json"
# The root package's targets of ROOT_TESTS ("name|kind:target|test").
root_args=()
for entry in "${ROOT_TESTS[@]}"; do
    IFS='|' read -r _ kt _ <<<"$entry"
    root_args+=("--${kt%%:*}" "${kt#*:}")
done
cargo test "${fmt[@]}" --no-run -p scalarize "${root_args[@]}" >>"$json"
# One cargo call per package for the CUDA test targets.
declare -A per_pkg=()
for entry in "${CUDA_TESTS[@]}"; do
    per_pkg["${entry%%:*}"]+=" --test ${entry#*:}"
done
for pkg in "${!per_pkg[@]}"; do
    # shellcheck disable=SC2086 # the list of --test flags is meant to split
    cargo test "${fmt[@]}" --no-run -p "$pkg" ${per_pkg[$pkg]} >>"$json"
done
bench_args=()
for b in "${GPU_BENCHES[@]}"; do
    bench_args+=(--bench "$b")
done
cargo bench --locked --message-format=json-render-diagnostics --no-run "${bench_args[@]}" >>"$json"
cargo metadata --locked --no-deps --format-version 1 >"$meta"

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/stage"
commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
dirty="$(git status --porcelain --untracked-files=no 2>/dev/null | wc -l)"
python3 - "$json" "$meta" "$ROOT" "$BUNDLE" "$commit" "$dirty" <<'PY'
"""Writes BUNDLE/manifest.tsv and copies each executable under BUNDLE/stage at its path
relative to the checkout."""
import json, os, shutil, sys

log, meta, root, bundle, commit, dirty = sys.argv[1:]
names = {os.path.dirname(p["manifest_path"]): p["name"] for p in json.load(open(meta))["packages"]}
rows, seen = [], set()
for line in open(log):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    exe = m.get("executable")
    if m.get("reason") != "compiler-artifact" or not exe:
        continue
    target = m["target"]
    kind = target["kind"][0]
    if kind == "bin" and m["profile"]["test"]:
        kind = "bintest"
    pkg_dir = os.path.dirname(m["manifest_path"])
    key = (kind, names[pkg_dir], target["name"])
    if key in seen:
        continue
    seen.add(key)
    rel = os.path.relpath(exe, root)
    if rel.startswith(".."):
        sys.exit(f"gpu-bundle: {exe} lies outside the checkout {root}")
    dst = os.path.join(bundle, "stage", rel)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy2(exe, dst)
    rows.append((*key, os.path.relpath(pkg_dir, root), rel))
with open(os.path.join(bundle, "manifest.tsv"), "w") as f:
    f.write(f"# root\t{root}\n# commit\t{commit}\n# modified-files\t{dirty}\n")
    f.write("# kind\tpackage\ttarget\tpackage-dir\texecutable\n")
    for r in sorted(rows):
        f.write("\t".join(r) + "\n")
print(f"gpu-bundle: {len(rows)} executables")
PY
# Dates kept: gpu-check.sh never replaces a newer executable (a later local build) with these.
find "$BUNDLE/stage" -type f -exec strip --strip-all --preserve-dates {} +
tar -C "$BUNDLE/stage" -cf - . | xz -6 -T0 >"$BUNDLE/bundle.tar.xz"
rm -rf "$BUNDLE/stage"
ls -l "$BUNDLE"
echo "gpu-bundle: done; carry $BUNDLE to the GPU machine and run scripts/gpu-check.sh there"
