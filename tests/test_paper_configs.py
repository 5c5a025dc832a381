"""The paper's setups (config/paper/*.yaml): each validates and plans the whole DAG."""

import pytest
import yaml
from snakemake_runs import REPO, snakemake

from leafpipe.config import load_config

PAPER = sorted((REPO / "config" / "paper").glob("*.yaml"))


def test_there_is_a_config_per_paper_student_and_domain():
    names = {path.stem for path in PAPER}
    students = ("llama3.2-1b", "llama3.2-3b", "qwen2.5-math-1.5b")
    assert names == {f"{s}-{d}" for s in students for d in ("math", "code")}


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_a_paper_config_has_the_papers_settings_and_plans_every_stage(path, tmp_path):
    config = load_config(path)
    distill = config["distill"]
    assert (distill["lr"], distill["epochs"], distill["global_batch"], distill["kd"]["kind"]) == (
        1e-5,
        5,
        32,
        "forward_kl",
    )
    assert config["detection"]["cap"] == 0.5 and config["detection"]["percentile"] in (5, 10)
    assert config["models"]["teacher"]["path"].endswith(("70B-Instruct", "72B-Instruct"))
    raw = yaml.safe_load(path.read_text())
    proc = snakemake(tmp_path, "-n", configfile=path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for rule in (
        "corpus",
        "score",
        "teacher_logits",
        "distill",
        "attention",
        "generate",
        "grade",
        "report",
    ):
        assert f"rule {rule}:" in proc.stdout
    teacher_gpus = raw["resources"]["score"]["teacher"]["gpu"]
    assert (
        f"gpu={teacher_gpus}, mem_mb={raw['resources']['score']['teacher']['mem_mb']}"
        in proc.stdout
    )
