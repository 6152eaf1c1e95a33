#!/usr/bin/env bash
# GPU check: run on a machine with an NVIDIA GPU (CI has none). Builds the workspace, runs every
# test that needs CUDA with skips turned into failures, runs the GPU kernel benchmarks (each
# compares with PyTorch in the same run when torch is installed), and prints a short table last.
#
#     scripts/gpu-check.sh            # everything
#     SCALARIZE_GPU_CHECK_NO_BENCH=1 scripts/gpu-check.sh   # tests only
#     SCALARIZE_GPU_CHECK_EMULATE=1 scripts/gpu-check.sh    # dry run without a GPU: CUDA
#                                                         # tests on the emulator
#     SCALARIZE_GPU_CHECK_ONLY='bench-grad|cuda_kernels' scripts/gpu-check.sh   # some steps
#
# On a GPU machine without cargo, it runs the same steps from the executables that
# scripts/gpu-bundle.sh built elsewhere (.gpu-bundle/, or SCALARIZE_GPU_BUNDLE=DIR, which also
# forces that mode where cargo exists).
#
# Every later GPU feature adds itself to scripts/gpu-targets.sh. Benchmarks append JSON lines to
# $OUT/summary.jsonl (see benches/weighted_loss.rs); the table is built from it.
set -uo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/gpu-targets.sh
source scripts/gpu-targets.sh
ROOT="$PWD"

# Where there is no cargo (this workplace's GPU machines have no Rust toolchain and reach no
# registry), the steps run the executables that scripts/gpu-bundle.sh packed elsewhere.
BUNDLE="${SCALARIZE_GPU_BUNDLE:-.gpu-bundle}"
MODE=cargo
if [ -n "${SCALARIZE_GPU_BUNDLE:-}" ] || ! command -v cargo >/dev/null; then
    if [ ! -f "$BUNDLE/bundle.tar.xz" ] || [ ! -f "$BUNDLE/manifest.tsv" ]; then
        echo "gpu-check: no cargo here and no $BUNDLE/bundle.tar.xz + manifest.tsv: run" \
            "scripts/gpu-bundle.sh where cargo works and bring $BUNDLE along" >&2
        exit 2
    fi
    MODE=bundle
fi

OUT="${SCALARIZE_GPU_CHECK_OUT:-target/gpu-check}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)" # absolute: steps run in package folders
SUMMARY="$OUT/summary.jsonl"
STATUS="$OUT/status.tsv"
: >"$SUMMARY"
: >"$STATUS"

# cudarc dlopens libcuda, libnvrtc and libcublas by name: put every folder that holds NVRTC or
# cuBLAS (CUDA toolkit, pip wheels such as torch's nvidia-* packages, CI's NVRTC wheel) on
# LD_LIBRARY_PATH, CUDA 13 folders first (the cudarc build targets CUDA 13.0).
lib_dirs=()
for d in .ci/local/nvrtc/nvidia/cu13/lib /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 \
    /usr/local/cuda-12*/lib64; do
    [ -d "$d" ] && lib_dirs+=("$(cd "$d" && pwd)")
done
if command -v python3 >/dev/null; then
    while IFS= read -r d; do
        [ -n "$d" ] && lib_dirs+=("$d")
    done < <(python3 - <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
dirs = []
for r in roots:
    dirs += sorted(glob.glob(os.path.join(r, "nvidia", "cu13", "lib")))
    dirs += sorted(glob.glob(os.path.join(r, "nvidia", "*", "lib")))
seen = set()
for d in dirs:
    if d not in seen and glob.glob(os.path.join(d, "lib*.so*")):
        seen.add(d)
        print(d)
EOF
    )
fi
# A driver older than CUDA 13 cannot load PTX from NVRTC 13: then use only CUDA 12 libraries.
drv_cuda="$(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9]*' | grep -o '[0-9]*$' || true)"
for d in "${lib_dirs[@]}"; do
    if [ -n "$drv_cuda" ] && [ "$drv_cuda" -lt 13 ] && [[ "$d" == *cu13* || "$d" == *cuda-13* ]]; then
        continue
    fi
    if compgen -G "$d/libnvrtc.so*" >/dev/null || compgen -G "$d/libcublas.so*" >/dev/null; then
        LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
    fi
done
# The driver's libcuda where the loader does not already know it (some container images mount
# the driver under /usr/local/nvidia without a loader entry).
# (grep reads all of ldconfig's output: with -q its early exit could SIGPIPE ldconfig, and
# pipefail would report the library missing.)
if ! ldconfig -p 2>/dev/null | grep 'libcuda\.so' >/dev/null; then
    for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/wsl/lib; do
        if compgen -G "$d/libcuda.so*" >/dev/null; then
            LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
        fi
    done
fi
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"
if [ -n "${SCALARIZE_GPU_CHECK_EMULATE:-}" ]; then
    # Dry run without a GPU (e.g. of a fresh bundle before carrying it): the CUDA tests run
    # their kernels on the emulator, GPU-only tests and benchmark groups skip.
    export SCALARIZE_CUDA_EMULATOR=1
else
    export SCALARIZE_REQUIRE_GPU=1 SCALARIZE_REQUIRE_NVRTC=1
fi
echo "driver CUDA version: ${drv_cuda:-unknown}; LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

failed=0
# step NAME COMMAND...: runs it, logs to $OUT/NAME.log, records status and seconds.
step() {
    local name="$1"
    shift
    # SCALARIZE_GPU_CHECK_ONLY=REGEX runs only the steps whose names match (and the unpacking).
    if [ -n "${SCALARIZE_GPU_CHECK_ONLY:-}" ] && [ "$name" != unpack-bundle ] &&
        ! grep -qE "$SCALARIZE_GPU_CHECK_ONLY" <<<"$name"; then
        return 0
    fi
    echo "== $name: $*"
    local t0=$SECONDS
    if "$@" 2>&1 | tee "$OUT/$name.log"; then
        printf '%s\tok\t%ss\n' "$name" "$((SECONDS - t0))" >>"$STATUS"
    else
        printf '%s\tFAILED\t%ss\n' "$name" "$((SECONDS - t0))" >>"$STATUS"
        failed=1
    fi
}

# Unpacks the bundle into this checkout and makes the checkout's path at build time (fixed in
# the executables) lead here.
unpack_bundle() {
    local root built here
    root="$(manifest_field root)"
    built="$(manifest_field commit)"
    if [ -z "$root" ]; then
        echo "no '# root' line in $BUNDLE/manifest.tsv"
        return 1
    fi
    echo "bundle: commit $built, $(manifest_field modified-files) modified files"
    here="$(git rev-parse HEAD 2>/dev/null || true)"
    if [ -n "$here" ] && [ "$here" != "$built" ]; then
        echo "WARNING: the bundle was built at commit $built, this checkout is at $here:" \
            "its executables test the sources they were built from (scripts/gpu-bundle.sh)"
    fi
    if command -v xz >/dev/null; then
        # Newer files stay: in a development checkout they are later builds, which cargo's
        # fingerprints describe.
        xz -dc "$BUNDLE/bundle.tar.xz" |
            tar --keep-newer-files --warning=no-ignore-newer -xf - -C "$ROOT" || return 1
    else
        python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
            "$BUNDLE/bundle.tar.xz" "$ROOT" || return 1
    fi
    if [ "$root" != "$ROOT" ]; then
        if [ -L "$root" ] || [ ! -e "$root" ]; then
            mkdir -p "$(dirname "$root")" && ln -sfn "$ROOT" "$root" || return 1
            echo "linked $root -> $ROOT (the bundle's paths)"
        elif [ "$(cd "$root" && pwd -P)" != "$(pwd -P)" ]; then
            echo "the bundle was built in $root, which exists here and is another folder:" \
                "rebuild the bundle from a checkout at a path free on this machine"
            return 1
        fi
    fi
}

# manifest_field NAME: the value of the bundle manifest's "# NAME" header line.
manifest_field() {
    awk -F'\t' -v k="# $1" '$1 == k { print $2 }' "$BUNDLE/manifest.tsv"
}

# bundle_row KIND PACKAGE TARGET: "package-dir<TAB>executable" from the bundle's manifest.
bundle_row() {
    awk -F'\t' -v k="$1" -v p="$2" -v t="$3" '$1 == k && $2 == p && $3 == t { print $4 "\t" $5 }' \
        "$BUNDLE/manifest.tsv"
}

# run_target KIND PACKAGE TARGET ARGS...: a test target (kind test), a binary's unit tests
# (bintest) or a benchmark (bench), through cargo or from the bundle (run in the package's
# folder, as cargo does).
run_target() {
    local kind="$1" pkg="$2" target="$3"
    shift 3
    if [ "$MODE" = cargo ]; then
        case "$kind" in
            test) cargo test --release --locked -p "$pkg" --test "$target" -- "$@" ;;
            bintest) cargo test --release --locked -p "$pkg" --bin "$target" -- "$@" ;;
            bench) cargo bench --locked -p "$pkg" --bench "$target" -- "$@" ;;
        esac
        return
    fi
    local row dir exe
    row="$(bundle_row "$kind" "$pkg" "$target")"
    if [ -z "$row" ]; then
        echo "$kind $pkg:$target is not in $BUNDLE/manifest.tsv: rebuild it (scripts/gpu-bundle.sh)"
        return 1
    fi
    dir="${row%%$'\t'*}"
    exe="${row#*$'\t'}"
    if [ "$kind" = bench ]; then
        set -- --bench "$@"
    fi
    (cd "$ROOT/$dir" && "$ROOT/$exe" "$@")
}

if [ -z "${SCALARIZE_GPU_CHECK_EMULATE:-}" ]; then
    step nvidia-smi nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
fi
if [ "$MODE" = cargo ]; then
    step build cargo build --workspace --release --locked --all-targets
    step devices cargo run --release --locked -- devices
else
    step unpack-bundle unpack_bundle
    step devices "$ROOT/$(bundle_row bin scalarize scalarize | cut -f2)" devices
fi
for entry in "${ROOT_TESTS[@]}"; do
    IFS='|' read -r name kt test <<<"$entry"
    kind="${kt%%:*}"
    [ "$kind" = bin ] && kind=bintest
    step "$name" run_target "$kind" scalarize "${kt#*:}" "$test" --nocapture
done
for entry in "${CUDA_TESTS[@]}"; do
    step "test-${entry#*:}" run_target test "${entry%%:*}" "${entry#*:}" --nocapture
done
if [ -z "${SCALARIZE_GPU_CHECK_NO_BENCH:-}" ]; then
    export SCALARIZE_BENCH_SUMMARY="$SUMMARY"
    # Only the benchmarks' GPU groups (CPU figures are measured on CPU machines), unless
    # SCALARIZE_BENCH_GPU_ONLY=0 is given.
    export SCALARIZE_BENCH_GPU_ONLY="${SCALARIZE_BENCH_GPU_ONLY:-1}"
    for b in "${GPU_BENCHES[@]}"; do
        step "bench-$b" run_target bench scalarize "$b"
    done
fi

echo
echo "== summary ($OUT)"
python3 - "$STATUS" "$SUMMARY" <<'EOF' || { cat "$STATUS"; cat "$SUMMARY"; }
import json, sys
status, summary = sys.argv[1], sys.argv[2]
print(f"{'step':<28} {'result':<8} time")
for line in open(status):
    name, res, secs = line.rstrip("\n").split("\t")
    print(f"{name:<28} {res:<8} {secs}")
rows = [json.loads(l) for l in open(summary) if l.strip()]
bw = [r for r in rows if "gbps" in r]
vs = [r for r in rows if "speedup" in r]
if bw:
    print()
    # "best" is the ratio of the fastest calls (CPU rows; the machine may be shared).
    print(f"{'kernel':<14} {'dev':<4} {'shape':<28} {'GB/s':>8} {'copy GB/s':>10} {'% copy':>7} {'best':>5} target")
    for r in bw:
        target = "80%" if r["device"] == "gpu" else "60%"
        best = f"{r['best_ratio_pct']:.0f}%" if "best_ratio_pct" in r else "-"
        print(f"{r['bench']:<14} {r['device']:<4} {r['shape']:<28} {r['gbps']:>8.1f} "
              f"{r['copy_gbps']:>10.1f} {r['ratio_pct']:>6.0f}% {best:>5} {target}")
if vs:
    print()
    print(f"{'comparison':<22} {'shape':<26} {'ours ms':>9} {'baseline':<24} {'ms':>9} {'speedup':>8} goal")
    for r in vs:
        print(f"{r['bench']:<22} {r['shape']:<26} {r['ours_ms']:>9.3f} {r['baseline']:<24} "
              f"{r['baseline_ms']:>9.3f} {r['speedup']:>7.2f}x {r['goal']}x")
EOF
exit "$failed"
