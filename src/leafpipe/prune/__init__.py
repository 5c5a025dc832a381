"""Pruning (the end of the paper's stage 1): counterfactual samples with one confounding span
removed, and their validity check.
"""
