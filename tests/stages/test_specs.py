"""Stage specs (leafpipe.stages.specs): every stage declares the config keys it reads, its rule
tracks exactly those (less the ones that change no output), and it can read nothing else."""

import copy
import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from leafpipe.cli import STAGES
from leafpipe.config import SCHEMA, for_seed, load_config
from leafpipe.stages.common import _pick
from leafpipe.stages.specs import (
    EVERYTHING,
    SPECS,
    paths,
    stage_config,
    tracked_settings,
    whole_config,
)

REPO = Path(__file__).resolve().parents[2]
# One job of each stage, as its wildcards name it.
WILDCARDS = {"role": "student", "model": "teacher", "benchmark": "b", "seed": "0"}


@pytest.fixture(scope="module")
def config():
    whole = load_config(REPO / "config" / "config.yaml")
    return for_seed(whole, whole["seeds"][0])


def _schema_node(node, schema, part):
    """The schema of key `part` under `node` (following $ref and additionalProperties)."""
    while "$ref" in node:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
    if part in node.get("properties", {}):
        return node["properties"][part]
    extra = node.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def test_every_stage_has_a_spec():
    assert set(SPECS) == set(STAGES)


def test_every_declared_key_is_a_key_of_the_schema():
    schema = yaml.safe_load(SCHEMA.read_text())
    for stage in SPECS:
        reads, untracked = paths(stage, WILDCARDS)
        for path in untracked:  # each one a key the stage reads
            assert any(path == r or path.startswith(r + ".") for r in reads), (stage, path)
        for path in reads:
            if path == EVERYTHING:
                continue
            node = schema
            for part in path.split("."):
                node = _schema_node(node, schema, part)
                assert node is not None, f"{stage}: {path}: no {part!r} in the schema"


def test_an_undeclared_key_is_refused_naming_the_stage_the_key_and_the_specs(config):
    scoped = stage_config("score", config, WILDCARDS)
    message = r"stage 'score' reads config key '{}', .* leafpipe/stages/specs.py"
    with pytest.raises(KeyError, match=message.format("evaluation")):
        scoped["evaluation"]
    with pytest.raises(KeyError, match=message.format(r"detection\.percentile")):
        scoped["detection"].get("percentile")
    with pytest.raises(KeyError, match=message.format(r"models\.student")):
        "student" in scoped["models"]
    assert scoped["scoring"] == config["scoring"]  # a declared section comes whole
    assert scoped["models"]["teacher"]["trust_remote_code"] is False


def test_a_declared_key_the_config_lacks_reads_as_absent(config):
    scoped = stage_config("derive_model", config, WILDCARDS)
    assert scoped["models"]["student"].get("derive") is None
    assert "derive" not in scoped["models"]["student"]
    with pytest.raises(KeyError, match=r"^'derive'$"):
        scoped["models"]["student"]["derive"]


def test_a_stage_config_survives_json_deepcopy_and_pickle(config):
    scoped = stage_config("teacher_logits", config, WILDCARDS)
    assert json.loads(json.dumps(scoped))["distill"]["kd"] == {
        k: config["distill"]["kd"][k] for k in ("temperature", "chunk_tokens")
    }
    for copied in (copy.deepcopy(scoped), pickle.loads(pickle.dumps(scoped))):
        assert copied == scoped
        with pytest.raises(KeyError, match="teacher_logits"):
            copied["distill"]["lr"]
    assert whole_config(scoped) == config  # what a stage hands on to its own processes


def _changed(config, path, value):
    changed = copy.deepcopy(config)
    *parents, last = path.split(".")
    node = changed
    for key in parents:
        node = node[key]
    node[last] = value
    return changed


@pytest.mark.parametrize(
    "stage, path, value, reruns",
    [
        ("distill", "distill.lr", 0.123, True),
        ("distill", "distill.gpus", 4, False),
        ("distill", "distill.collective_timeout_min", 99, False),
        ("distill", "models.student.trust_remote_code", True, True),
        ("teacher_logits", "distill.micro_batch", 3, False),
        ("teacher_logits", "distill.kd.temperature", 9.0, True),
        # The teacher's score job follows the teacher's trust, not the student's.
        ("score", "models.teacher.trust_remote_code", True, True),
        ("score", "models.student.trust_remote_code", True, False),
        ("score", "detection.percentile", 33, False),
        ("detect", "detection.percentile", 33, True),
        ("generate", "evaluation.gpus", 1, False),
        ("generate", "evaluation.batch_size", 3, True),
        ("world", "world.seed", 7, True),
    ],
)
def test_a_rule_reruns_exactly_when_a_setting_its_stage_reads_changes(
    config, stage, path, value, reruns
):
    before = tracked_settings(stage, config, WILDCARDS)
    after = tracked_settings(stage, _changed(config, path, value), WILDCARDS)
    assert (before != after) is reruns


def test_the_report_tracks_the_whole_config(config):
    assert tracked_settings("report", config, {}) == json.dumps(config, sort_keys=True)


def test_no_rule_lists_its_settings_by_hand():
    rules = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    for block in re.split(r"^rule ", rules, flags=re.M)[1:]:
        name = block.split(":", 1)[0]
        settings = re.findall(r"^\s+settings=(.*)$", block, re.M)
        assert settings == [f'settings_of("{name}"),'], name


@dataclass
class Spec:
    a: int = 0


def test_pick_refuses_a_key_its_spec_lacks_unless_it_is_named_as_for_something_else():
    assert _pick(Spec, {"a": 1, "shards": 2}, not_for=("shards",)) == Spec(1)
    with pytest.raises(TypeError, match=r"Spec has no field for the config key\(s\) \['shards'\]"):
        _pick(Spec, {"a": 1, "shards": 2})
