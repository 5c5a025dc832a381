"""Files every stage writes: atomically, and (Parquet) with the fingerprints of what they were made
from.
"""
