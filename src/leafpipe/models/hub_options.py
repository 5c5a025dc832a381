"""What the config says of how a model may be loaded: whether its own code may run and at which
hub revision, as `from_pretrained`'s keywords.

Torch-free, apart from `loading`, which imports torch: the stages that only read these settings
(the corpus's token count, benchmark rows, grading, exports) then start without importing torch,
about a second of every such job.
"""

from __future__ import annotations

from typing import Any

from leafpipe.config import model_role


def trusts_remote_code(config: dict[str, Any], model: str) -> bool:
    """Whether a model's own Python code may run: only if its role's config says so explicitly
    (`config.model_role`: a distilled variant is trusted as far as the student)."""
    role = model_role(model)
    return bool(config.get("models", {}).get(role, {}).get("trust_remote_code", False))


def pinned_revision(config: dict[str, Any], model: str) -> str | None:
    """The hub revision (branch, tag or commit) a role's `path` is loaded at: its `revision`, so
    that a rerun months later loads the same weights and tokenizer. None where none is pinned,
    and for a distilled variant, which is a folder this run wrote, not a hub id."""
    if model_role(model) != model:
        return None
    return config.get("models", {}).get(model, {}).get("revision")


def hub_options(config: dict[str, Any], model: str) -> dict[str, Any]:
    """`from_pretrained`'s keywords for a model: `trust_remote_code` and `revision`."""
    return {
        "trust_remote_code": trusts_remote_code(config, model),
        "revision": pinned_revision(config, model),
    }
