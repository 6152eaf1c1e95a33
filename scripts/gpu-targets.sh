# What the GPU check runs, shared by scripts/gpu-check.sh and scripts/gpu-bundle.sh (sourced,
# not run). Every later GPU feature adds itself here.

# Test targets that need CUDA, as "package:test-target" (each runs whole).
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

# Single tests of the root package, as "step-name|kind:target|test-name": kind `test` is an
# integration test (tests/TARGET.rs), `bin` the unit tests of binary TARGET.
ROOT_TESTS=(
    # `scalarize train --device cuda` end to end (CPU vs device losses).
    "test-train-device|test:train|training_on_a_cuda_device_follows_the_cpu"
    # The MTO methods' device path (T x P gradients, Gram and combination on the device).
    "test-train-mto-device|test:train|mto_methods_on_a_cuda_device_follow_the_cpu"
    # ... and its transfers: a device MTO step reads back no task gradients.
    "test-trainer-transfers|bin:scalarize|device_mto_steps_read_back_no_task_gradients"
)
