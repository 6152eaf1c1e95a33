#!/usr/bin/env bash
# GPU check: run on a machine with an NVIDIA GPU (CI has none). Builds the workspace, runs every
# test that needs CUDA with skips turned into failures, runs the GPU kernel benchmarks (each
# compares with PyTorch in the same run when torch is installed), and prints a short table last.
#
#     scripts/gpu-check.sh            # everything
#     SCALARIZE_GPU_CHECK_NO_BENCH=1 scripts/gpu-check.sh   # tests only
#
# Every later GPU feature adds itself to CUDA_TESTS / GPU_BENCHES below. Benchmarks append JSON
# lines to $OUT/summary.jsonl (see benches/weighted_loss.rs); the table is built from it.
set -uo pipefail
cd "$(dirname "$0")/.."

# Test targets that need CUDA, as "package:test-target".
CUDA_TESTS=(
    "scalarize-kernels:nvrtc_compile"
    "scalarize-kernels:cuda_emulator"
    "scalarize-kernels:cuda_activation"
    "scalarize-kernels:cuda_attention"
    "scalarize-kernels:cuda_batch_norm"
    "scalarize-kernels:cuda_combine"
    "scalarize-kernels:cuda_concat"
    "scalarize-kernels:cuda_conv"
    "scalarize-kernels:cuda_cross_entropy"
    "scalarize-kernels:cuda_elementwise"
    "scalarize-kernels:cuda_gemm"
    "scalarize-kernels:cuda_kernels"
    "scalarize-kernels:cuda_layer_norm"
    "scalarize-kernels:cuda_optim"
    "scalarize-kernels:cuda_permute"
    "scalarize-kernels:cuda_pool"
    "scalarize-kernels:cuda_reduce"
    "scalarize-kernels:cuda_softmax"
    "scalarize-kernels:cuda_transfers"
    "scalarize-kernels:cuda_upsample"
    "scalarize-autograd:cuda_ops"
    "scalarize-autograd:cuda_ops_attn"
    "scalarize-autograd:cuda_ops_conv"
    "scalarize-autograd:cuda_ops_norm"
    "scalarize-autograd:cuda_ops_shape"
    "scalarize-nn:cuda_model"
    "scalarize-nn:cuda_memory"
    "scalarize-nn:cuda_step_transfers"
    "scalarize-nn:cuda_syncs"
)
# Criterion benchmarks (root package) with a GPU group.
GPU_BENCHES=(
    weighted_loss
    grad_gram
    train_step_gpu
)

OUT="${SCALARIZE_GPU_CHECK_OUT:-target/gpu-check}"
mkdir -p "$OUT"
SUMMARY="$PWD/$OUT/summary.jsonl"
STATUS="$PWD/$OUT/status.tsv"
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
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"
export SCALARIZE_REQUIRE_GPU=1 SCALARIZE_REQUIRE_NVRTC=1
echo "driver CUDA version: ${drv_cuda:-unknown}; LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

failed=0
# step NAME COMMAND...: runs it, logs to $OUT/NAME.log, records status and seconds.
step() {
    local name="$1"
    shift
    echo "== $name: $*"
    local t0=$SECONDS
    if "$@" 2>&1 | tee "$OUT/$name.log"; then
        printf '%s\tok\t%ss\n' "$name" "$((SECONDS - t0))" >>"$STATUS"
    else
        printf '%s\tFAILED\t%ss\n' "$name" "$((SECONDS - t0))" >>"$STATUS"
        failed=1
    fi
}

step nvidia-smi nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
step build cargo build --workspace --release --locked --all-targets
step devices cargo run --release --locked -- devices
# The root package's end-to-end run of `scalarize train --device cuda` (CPU vs device losses).
step "test-train-device" cargo test --release --locked --test train training_on_a_cuda_device_follows_the_cpu -- --nocapture
# The MTO methods' device path (T x P gradients, Gram and combination on the device) vs the CPU.
step "test-train-mto-device" cargo test --release --locked --test train mto_methods_on_a_cuda_device_follow_the_cpu -- --nocapture
# ... and its transfers: a device MTO step reads back no task gradients (binary's unit test).
step "test-trainer-transfers" cargo test --release --locked --bin scalarize device_mto_steps_read_back_no_task_gradients -- --nocapture
for entry in "${CUDA_TESTS[@]}"; do
    pkg="${entry%%:*}"
    target="${entry#*:}"
    step "test-$target" cargo test --release --locked -p "$pkg" --test "$target" -- --nocapture
done
if [ -z "${SCALARIZE_GPU_CHECK_NO_BENCH:-}" ]; then
    for b in "${GPU_BENCHES[@]}"; do
        step "bench-$b" env SCALARIZE_BENCH_SUMMARY="$SUMMARY" cargo bench --locked --bench "$b"
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
