"""leafpipe: LeaF (Learning to Focus) causal attention distillation as a Snakemake pipeline."""

__version__ = "0.1.0"
