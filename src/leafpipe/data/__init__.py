"""Inputs of a run: the confounder world and the distillation corpus, every row kept or skipped
with its reason.
"""
