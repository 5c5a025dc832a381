"""The command line follows the stage signatures exactly, and hands a stage only the config its
spec declares, as the workflow's adapter does."""

from collections.abc import Sequence
from pathlib import Path

import pytest

from leafpipe import cli

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "config" / "config.yaml")


def test_a_list_parameter_with_a_default_is_optional():
    args = cli.build_parser().parse_args(
        ["corpus", "--out-path", "o", "--info-path", "i", "--skipped-path", "s"]
    )
    assert args.held_out == () and args.corpus_file is None
    args = cli.build_parser().parse_args(
        ["corpus", "--out-path", "o", "--info-path", "i", "--skipped-path", "s"]
        + ["--held-out", "a.jsonl", "b.jsonl"]
    )
    assert args.held_out == ["a.jsonl", "b.jsonl"]


def test_a_list_parameter_without_a_default_is_required(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["gather_scores", "--out-path", "o"])
    assert "--shard-paths" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(cli.STAGES))
def test_help_lists_every_parameter(name, capsys):
    import inspect

    with pytest.raises(SystemExit):
        cli.main([name, "--help"])
    shown = capsys.readouterr().out
    for param in inspect.signature(cli.STAGES[name]).parameters:
        if param != "config":
            assert "--" + param.replace("_", "-") in shown, (name, param)


def test_a_stage_run_by_hand_can_read_only_what_its_spec_declares(monkeypatch):
    seen = {}

    def tokenizer(config, corpora: Sequence[str], out_dir: str) -> None:
        seen["vocab_size"] = config["tokenizer"]["vocab_size"]
        config["world"]

    monkeypatch.setitem(cli.STAGES, "tokenizer", tokenizer)
    argv = ["tokenizer", "--configfile", CONFIG, "--seed", "0", "--corpora", "a", "--out-dir", "o"]
    with pytest.raises(KeyError, match=r"stage 'tokenizer' reads config key 'world'"):
        cli.main(argv)
    assert seen == {"vocab_size": 512}


def test_the_cli_fills_a_specs_placeholders_from_the_stage_arguments(monkeypatch):
    seen = {}

    def benchmark_data(config, benchmark: str, out_path: str, info_path: str) -> None:
        seen.update(config["evaluation"]["benchmarks"])

    monkeypatch.setitem(cli.STAGES, "benchmark_data", benchmark_data)
    cli.main(
        ["benchmark_data", "--configfile", CONFIG, "--seed", "0", "--benchmark", "world_test"]
        + ["--out-path", "o", "--info-path", "i"]
    )
    assert list(seen) == ["world_test"]
