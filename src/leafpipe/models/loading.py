"""Loading models: a causal LM and its tokenizer, placed on the job's GPUs, with remote code only
when trusted and at the hub revision the config pins."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("leafpipe")


def load_model(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    *,
    trust_remote_code: bool = False,
    revision: str | None = None,
    **options: Any,
) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a folder or hub id (at `revision`: the hub's default
    branch when None; a folder has no revisions and ignores it)."""
    from transformers import AutoModelForCausalLM

    from leafpipe.text.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code, revision=revision)
    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=dtype, trust_remote_code=trust_remote_code, revision=revision, **options
    )
    return model, tokenizer


def load_placed_model(
    path: str | Path, *, trust_remote_code: bool = False, revision: str | None = None
) -> tuple[Any, Any]:
    """A model in eval mode on the job's GPUs, which are all the GPUs it sees
    (`leafpipe.execution.devices` claimed them): in bf16, whole on one, split layer by layer over
    several (a 70B teacher needs about four 80 GB GPUs); in float32 on the CPU without any.

    Weights load straight onto the GPUs. Over several, `device_map="balanced"` gives each GPU an
    equal share of the layers, so each keeps the same room for activations, and the memory budget
    names the GPUs alone: a model too large for them is refused (ValueError) instead of having
    layers offloaded to host RAM or disk and read again on every forward pass, as "auto" would.
    """
    gpus = torch.cuda.device_count()
    if not gpus:
        model, tok = load_model(
            path, torch.float32, trust_remote_code=trust_remote_code, revision=revision
        )
        return model.eval(), tok
    placement: dict[str, Any] = {"device_map": {"": 0}}
    if gpus > 1:
        placement = {
            "device_map": "balanced",
            "max_memory": {i: torch.cuda.mem_get_info(i)[0] for i in range(gpus)},
        }
    model, tok = load_model(
        path,
        torch.bfloat16,
        trust_remote_code=trust_remote_code,
        revision=revision,
        **placement,
    )
    offloaded = sorted(
        {str(d) for d in getattr(model, "hf_device_map", {}).values()} & {"cpu", "disk"}
    )
    if offloaded:
        raise ValueError(
            f"{path} does not fit in the free memory of the job's {gpus} GPU(s): parts of it "
            f"would run from {' and '.join(offloaded)}; give its rule more GPUs (resources: gpu)"
        )
    return model.eval(), tok
