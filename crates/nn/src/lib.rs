//! scalarize-nn: layers, ResNet and ViT families, multi-head models, optimizers, LR schedules
//! and safetensors checkpoints.
