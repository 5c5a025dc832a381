"""vLLM's tensor-parallel size, and the planner counting a generate job's GPUs by it."""

import pytest

from leafpipe.config import validate_config
from leafpipe.execution import job_needs
from leafpipe.execution.memory import ModelShape
from leafpipe.execution.tensor_parallel import tensor_parallel_size

SIX_HEADS = ModelShape(
    layers=4,
    hidden=384,
    intermediate=1024,
    heads=6,
    kv_heads=6,
    head_dim=64,
    vocab=1000,
    tied_embeddings=False,
)


@pytest.mark.parametrize(
    "gpus, heads, kv_heads, size",
    [
        (4, 6, 6, 3),
        (4, 28, 4, 4),
        (3, 28, 4, 2),
        (8, 32, 8, 8),
        (5, 7, 7, 1),
        (1, 6, 2, 1),
        (0, 6, 2, 0),
        # key-value heads: fewer than the GPUs, each copied onto a whole number of them
        (8, 32, 2, 8),
        (4, 12, 2, 4),
        # 3 divides 12 heads but neither divides nor is a multiple of 2 key-value heads
        (3, 12, 2, 2),
        (4, 6, 2, 2),
    ],
)
def test_the_size_is_the_most_gpus_that_split_the_heads_and_key_value_heads(
    gpus, heads, kv_heads, size
):
    assert tensor_parallel_size(gpus, heads, kv_heads) == size


def _generate_need(backend: str, gpus: int) -> job_needs.Need | None:
    config = validate_config(
        {
            "models": {"teacher": {}, "student": {}},
            "evaluation": {"backend": backend, "benchmarks": {"g": {"kind": "gsm8k"}}},
        }
    )
    run = job_needs.Run(config, {"teacher": SIX_HEADS, "student": SIX_HEADS}, 10, 64)
    return job_needs.generate_need(run, "teacher", gpus)


@pytest.mark.parametrize("backend", ["vllm", "auto"])
def test_the_planner_splits_a_generate_job_over_the_gpus_vllm_uses(backend):
    """4 GPUs for a 6-head model: vLLM holds it on 3, so each holds a third, not a quarter;
    transformers splits its layers over all 4."""
    assert _generate_need(backend, 4) == _generate_need("transformers", 3)
    assert _generate_need(backend, 4) != _generate_need("transformers", 4)
