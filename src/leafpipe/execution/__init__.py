"""Running jobs: the Snakemake adapter, GPU claiming, and the memory and time planner behind each
rule's resources.

Torch-free where the Snakefile imports it (`plan`, `memory`) on every job.
"""
