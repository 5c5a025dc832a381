"""Distillation (the paper's stage 2): one trainer for every variant (sft, kd, LeaF), its data,
losses and checkpoints.

Torch-free at the top level: the Snakefile imports `leafpipe.distill.variants` on every start.
"""
