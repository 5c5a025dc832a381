"""The pooled report: results table, paired comparisons, detection quality, attention, and the
run's record.
"""
