"""Grading by kind of answer: numeric, free-text math, programs in a sandbox, and question
answering.
"""
