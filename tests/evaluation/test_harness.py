"""The lm_eval command line and the results file it leaves (flags from docs/interface.md and the
results file's place from `lm_eval/loggers/evaluation_tracker.py` of
EleutherAI/lm-evaluation-harness, commit 4e7e0d4)."""

import pytest

from leafpipe.evaluation.harness import HarnessError, harness_command, results_file

SETTINGS = {
    "tasks": ["hellaswag"],
    "batch_size": 8,
    "device": "cpu",
    "num_fewshot": 5,
    "limit": None,
    "apply_chat_template": True,
    "model_args": "dtype=bfloat16",
    "extra_args": [],
}


def test_every_setting_becomes_its_flag():
    command = harness_command("lm_eval", "/m/kd", SETTINGS, True, 3, "/scratch")
    assert command[:5] == [
        "lm_eval",
        "--model",
        "hf",
        "--model_args",
        "pretrained=/m/kd,trust_remote_code=True,dtype=bfloat16",
    ]
    flags = dict(zip(command[5::2], command[6::2]))
    assert flags["--num_fewshot"] == "5" and flags["--batch_size"] == "8"
    assert flags["--output_path"] == "/scratch" and flags["--seed"] == "3"
    assert command[-1] == "--apply_chat_template" and "--limit" not in command


def test_a_model_folder_with_a_comma_is_refused():
    with pytest.raises(HarnessError, match="comma"):
        harness_command("lm_eval", "/m/a,b", SETTINGS, False, 0, "/scratch")


def test_exactly_one_results_file_must_be_left(tmp_path):
    with pytest.raises(HarnessError, match="0 results files"):
        results_file(tmp_path)
    (tmp_path / "model").mkdir()
    first = tmp_path / "model" / "results_2026-01-01T00-00-00.json"
    first.write_text("{}")
    assert results_file(tmp_path) == first
    (tmp_path / "model" / "results_2026-01-02T00-00-00.json").write_text("{}")
    with pytest.raises(HarnessError, match="2 results files"):
        results_file(tmp_path)
