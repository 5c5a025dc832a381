"""The first GPU run's targets (bench/gpu_targets.py): the bf16 peak read from a device name, and
PASS/FAIL computed from the records bench/score.py and bench/distill.py write with `--json` (here
from toy CPU runs, their measurements then moved onto the targets' shapes)."""

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
import gpu_targets  # noqa: E402

SCORE_TOY = (
    "--shape world-teacher --samples 4 --min-tokens 32 --max-tokens 48 --vocab 300 --warmup 1 "
    "--repeats 1 --memory off --threads 1"
)
KD_TOY = "--vocab 300 --seq 32 --hidden 16 --chunk-tokens 8 --threads 1"


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_the_bf16_dense_peak_is_read_from_the_device_name(name, tflops):
    assert gpu_targets.bf16_dense_peak_tflops(name) == tflops


def record(tmp_path: Path, monkeypatch, script: str, args: str) -> dict:
    """The `--json` record of a toy CPU run of bench/`script`, run in this process."""
    monkeypatch.setenv("TQDM_DISABLE", "")  # bench/score.py disables tqdm on import: undone after
    monkeypatch.delenv("TQDM_DISABLE")
    out = tmp_path / f"{script}.json"
    importlib.import_module(script).main([*args.split(), "--json", str(out)])
    return json.loads(out.read_text())


def test_scoring_passes_at_40_percent_of_the_peak_on_the_8b_shape_only(tmp_path, monkeypatch):
    cpu = record(tmp_path, monkeypatch, "score", SCORE_TOY)
    assert gpu_targets.scoring_target(cpu).startswith("MISSING")  # not measured on a GPU
    achieved = cpu["methods"]["ours"]["tflops"]
    assert achieved > 0
    gpu = {**cpu, "device": "cuda", "device_name": "NVIDIA H100 80GB HBM3"}
    assert gpu_targets.scoring_target(gpu).startswith("MISSING")  # the tiny shape, not the 8B
    gpu["shape"], gpu["dtype"] = "llama-3.1-8b", "bf16"
    assert gpu_targets.scoring_target({**gpu, "peak_tflops": None}).startswith("UNKNOWN")
    passed = gpu_targets.scoring_target({**gpu, "peak_tflops": achieved / 0.41})
    assert passed.startswith("PASS") and "41.0% of" in passed
    assert gpu_targets.scoring_target({**gpu, "peak_tflops": achieved / 0.39}).startswith("FAIL")


def test_kd_memory_passes_at_most_2_gb_at_8192_tokens_of_a_128256_vocabulary(tmp_path, monkeypatch):
    cpu = record(tmp_path, monkeypatch, "distill", KD_TOY)
    assert gpu_targets.kd_memory_target(cpu).startswith("MISSING")
    (toy,) = cpu["vocabs"].values()
    gpu = {**cpu, "device": "cuda", "device_name": "NVIDIA H200"}
    assert gpu_targets.kd_memory_target(gpu).startswith("MISSING")  # 32 tokens, vocab 300
    gpu.update(batch=2, seq=4096, vocabs={"128256": toy})
    limit_mib = gpu_targets.KD_BYTES / gpu_targets.MIB
    for peak_mib, verdict in ((0.99 * limit_mib, "PASS"), (1.01 * limit_mib, "FAIL")):
        gpu["vocabs"]["128256"]["chunked"]["peak_mib"] = peak_mib
        assert gpu_targets.kd_memory_target(gpu).startswith(verdict)


def test_a_step_that_wrote_no_record_is_missing_not_passed(tmp_path, capsys):
    lines = gpu_targets.main(["--score", str(tmp_path / "none.json"), "--kd", str(tmp_path / "x")])
    assert [line.split()[0] for line in lines] == ["MISSING", "MISSING"]
    assert capsys.readouterr().out.splitlines() == lines
