"""Evaluation: benchmarks' rows, generation, grading by kind, and the attention analysis."""
