"""A checkpoint's own Python code runs only when the config trusts that model explicitly."""

from __future__ import annotations

from pathlib import Path

import pytest

from leafpipe import stages
from leafpipe.config import load_config
from leafpipe.models.pretrain import save_model

CUSTOM_CODE = """
import os
from pathlib import Path

from transformers import LlamaConfig, LlamaForCausalLM

Path(os.environ["LEAFPIPE_REMOTE_MARKER"]).write_text("ran")


class CustomConfig(LlamaConfig):
    model_type = "leafpipe_custom"


class CustomForCausalLM(LlamaForCausalLM):
    config_class = CustomConfig
"""


@pytest.fixture
def custom_model(
    tmp_path: Path, tiny_llama, tokenizer, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path]:
    """A folder whose config sends AutoModel to its own code, which leaves a marker when run."""
    import json

    folder = tmp_path / "custom"
    save_model(tiny_llama(), tokenizer, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="leafpipe_custom",
        auto_map={
            "AutoConfig": "modeling_custom.CustomConfig",
            "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM",
        },
    )
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_custom.py").write_text(CUSTOM_CODE)
    marker = tmp_path / "marker"
    monkeypatch.setenv("LEAFPIPE_REMOTE_MARKER", str(marker))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    return folder, marker


def test_untrusted_model_code_never_runs(custom_model: tuple[Path, Path]) -> None:
    folder, marker = custom_model
    with pytest.raises(ValueError, match="trust_remote_code"):
        stages.load_model(folder)
    assert not marker.exists()


def test_trusted_model_code_runs(custom_model: tuple[Path, Path]) -> None:
    folder, marker = custom_model
    model, _ = stages.load_model(folder, trust_remote_code=True)
    assert marker.read_text() == "ran"
    assert type(model).__name__ == "CustomForCausalLM"


def test_trust_is_per_role_and_off_by_default(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "models:\n  teacher: {path: org/teacher, trust_remote_code: true}\n"
        "  student: {path: org/student}\n"
    )
    config = load_config(path)
    assert config["models"]["student"]["trust_remote_code"] is False
    assert stages.trusts_remote_code(config, "teacher") is True
    # Distilled variants are students: they are trusted exactly as far as the student.
    assert not any(stages.trusts_remote_code(config, m) for m in ("student", "kd", "leaf_instr"))


def test_no_shipped_config_trusts_remote_code() -> None:
    configs = sorted(Path("config").rglob("*.yaml"))
    assert configs
    for path in configs:
        models = load_config(path)["models"]
        assert not any(m["trust_remote_code"] for m in models.values()), path
