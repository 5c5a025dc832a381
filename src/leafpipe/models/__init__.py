"""Models: loading and placing them on the job's GPUs, pre-training the world's models, importing
real ones offline.
"""
