"""How many of a generate job's GPUs vLLM splits a model over (its tensor-parallel size).

vLLM gives each GPU an equal share of every layer's attention heads, so it refuses a
tensor-parallel size that does not divide the model's number of attention heads (28 heads on 3
GPUs, say); the key-value heads are shared out too, or each copied onto a whole number of GPUs
when there are fewer of them than GPUs, so the size must also divide them or be a multiple of
them (Qwen2.5-1.5B's 12 heads, but 2 key-value heads, fit 4 GPUs, not 3). The generate stage
starts vLLM with the largest size that fits the job's GPUs, and the planner counts each GPU's
share of the weights by the same size, so the two agree on how many GPUs hold the model.
Torch-free: the planner imports it on every Snakemake start.
"""

from __future__ import annotations


def tensor_parallel_size(gpus: int, heads: int, kv_heads: int) -> int:
    """The largest number of GPUs, at most `gpus`, over which vLLM can split the attention (0
    without GPUs).

    Args:
        gpus: the GPUs the job was given (its `gpu` resource, all that it sees).
        heads: the model's attention heads (`num_attention_heads`).
        kv_heads: its key-value heads (`num_key_value_heads`).
    """
    return max(
        (
            d
            for d in range(1, gpus + 1)
            if heads % d == 0 and (kv_heads % d == 0 or d % kv_heads == 0)
        ),
        default=0,
    )
