"""Detection (the paper's stage 1): per-token gradient scores of teacher and student, and the
confounders they reveal.
"""
