"""Text and tokens: chat templates, tokenizers, batching, alignment between tokenisations,
reasoning steps.
"""
