"""Each role's model shape, for the planner (leafpipe.execution.plan), from what the config says
of its weights: a model folder's config.json, the shipped table of published models
(schema/model_shapes.yaml), a GGUF file's metadata, or the `models:` entry of a model built here.
Never the weights themselves, and nothing online. Torch-free: the Snakefile reads it on every job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from leafpipe.config import weights_origin
from leafpipe.execution import memory
from leafpipe.execution.memory import ModelShape

SHAPES = Path(__file__).parents[1] / "schema" / "model_shapes.yaml"
ROLES = ("teacher", "student")


@cache
def shipped_shapes() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(SHAPES.read_text())


def hub_shape(location: str, revision: str | None = None) -> ModelShape | None:
    """A model's shape by its folder's config.json, the shipped table (model_shapes.yaml), or the
    offline hub cache (AutoConfig, which imports transformers: the slowest, so the last) at the
    `revision` the config pins (`models.<role>.revision`: the cached config of another revision
    may be another shape). None when none has it, or its config is not a decoder's that
    `memory.model_shape` reads (no Llama-style keys)."""
    shipped = shipped_shapes().get(location)
    config_json = Path(location) / "config.json"
    try:
        if config_json.is_file():
            return memory.model_shape(json.loads(config_json.read_text()))
        if shipped is not None:
            return ModelShape(**shipped)
        from transformers import AutoConfig

        cached = AutoConfig.from_pretrained(location, revision=revision, local_files_only=True)
        return memory.model_shape(cached)
    except (OSError, ValueError, KeyError, TypeError):  # not cached, or not a config of that kind
        return None


def gguf_shape(spec: Mapping[str, Any]) -> ModelShape | None:
    """A GGUF file's shape from its metadata (the `<arch>.` keys llama.cpp writes); a tied head is
    a file without `output.weight`. None when the file or the `gguf` package is absent."""
    try:
        from gguf import GGUFReader

        from leafpipe.models.pretrained import ModelSourceError, gguf_path

        reader = GGUFReader(str(gguf_path(spec)))
    except (ImportError, ModelSourceError, OSError):
        return None
    arch = reader.fields["general.architecture"].contents()

    def field(name: str) -> int:
        return int(reader.fields[f"{arch}.{name}"].contents())

    heads, hidden = field("attention.head_count"), field("embedding_length")
    return ModelShape(
        layers=field("block_count"),
        hidden=hidden,
        intermediate=field("feed_forward_length"),
        heads=heads,
        kv_heads=field("attention.head_count_kv"),
        head_dim=hidden // heads,
        vocab=len(reader.fields["tokenizer.ggml.tokens"].data),
        tied_embeddings=not any(t.name == "output.weight" for t in reader.tensors),
    )


def built_shape(spec: Mapping[str, Any], vocab: int) -> ModelShape:
    """A model pre-trained here from its `models:` entry (leafpipe.models.pretrain.build_model:
    untied, head_dim = hidden / heads)."""
    return ModelShape(
        layers=spec["num_layers"],
        hidden=spec["hidden_size"],
        intermediate=spec["intermediate_size"],
        heads=spec["num_heads"],
        kv_heads=spec["num_kv_heads"],
        head_dim=spec["hidden_size"] // spec["num_heads"],
        vocab=vocab,
        tied_embeddings=False,
    )


def _made_config(config: Mapping[str, Any], role: str) -> Path:
    """The config.json of a role's model once this run has made it (the first replicate's: every
    replicate's has the same shape)."""
    return Path(config["results"]) / f"seed-{config['seeds'][0]}" / "models" / role / "config.json"


def role_shapes(config: Mapping[str, Any]) -> dict[str, ModelShape | None]:
    """Each role's shape by where its weights come from. An imported or derived model's is read from
    its folder once made (reading a GGUF file's metadata takes seconds, and the Snakefile is read
    again by every job), else from the GGUF file, or its source's with the kept layers (None when
    that source's is unknown)."""
    shapes: dict[str, ModelShape | None] = {}
    sources = {role: weights_origin(config, role) for role in ROLES}
    for role in ROLES:
        spec, made = config["models"][role], _made_config(config, role)
        if sources[role] in ("gguf", "derive") and made.is_file():
            shapes[role] = memory.model_shape(json.loads(made.read_text()))
        elif sources[role] == "path":
            shapes[role] = hub_shape(spec["path"], spec.get("revision"))
        elif sources[role] == "gguf":
            shapes[role] = gguf_shape(spec["gguf"])
        elif sources[role] == "trained":
            shapes[role] = built_shape(spec, config["tokenizer"]["vocab_size"])
    for role in ROLES:
        if sources[role] == "derive" and role not in shapes:
            derive = config["models"][role]["derive"]
            base = shapes.get(derive["from"])
            layers = (
                derive["layers"] if isinstance(derive["layers"], int) else len(derive["layers"])
            )
            shapes[role] = None if base is None else replace(base, layers=layers)
    return shapes
