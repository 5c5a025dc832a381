"""Snakemake adapter: every rule runs its leafpipe stage through this one script."""

from leafpipe.execution.adapter import run

run(snakemake)  # noqa: F821 (injected by Snakemake)
