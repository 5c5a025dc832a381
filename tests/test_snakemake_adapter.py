"""The one adapter every rule runs: names bind to the stage exactly once, so a rule's input can
never replace its wildcard (which once applied the student's trust_remote_code to the teacher)."""

import pytest

from leafpipe.snakemake_adapter import stage_arguments
from leafpipe.stages import trusts_remote_code


class Named(dict):
    """Snakemake's Namedlist as the adapter reads it: `.items()` of name -> value."""


class Job:
    def __init__(self, rule, wildcards=(), input=(), output=(), params=(), config=None):
        self.rule, self.threads = rule, 1
        self.wildcards, self.input = Named(wildcards), Named(input)
        self.output, self.params = Named(output), Named(params)
        self.config = config or {}


def score(config, model, model_dir, corpus_path, out_path, shard=0, threads=None):
    """The signature of stages.score, which is what matters here."""


CONFIG = {"models": {"teacher": {"trust_remote_code": True}, "student": {"trust_remote_code": False}}}


def test_an_input_named_like_a_wildcard_is_refused_with_both_names():
    job = Job("score", wildcards={"model": "teacher", "shard": "0"},
              input={"model": "results/models/teacher", "corpus_path": "c.jsonl"},
              output={"out_path": "o.parquet"}, params={"model_dir": "results/models/teacher"}, config=CONFIG)
    with pytest.raises(TypeError, match=r"rule 'score': input 'model' clashes with wildcards 'model'"):
        stage_arguments(job, score)


def test_a_param_named_like_an_output_or_config_is_refused():
    job = Job("score", output={"out_path": "a"}, params={"out_path": "b"})
    with pytest.raises(TypeError, match=r"params 'out_path' clashes with output 'out_path'"):
        stage_arguments(job, score)
    with pytest.raises(TypeError, match=r"input 'config' clashes with the adapter 'config'"):
        stage_arguments(Job("score", input={"config": "x"}), score)


def test_the_score_rule_hands_the_stage_the_role_so_the_teacher_gets_its_own_trust():
    job = Job("score", wildcards={"model": "teacher", "shard": "0"},
              input={"weights": "results/models/teacher", "corpus_path": "c.jsonl"},
              output={"out_path": "o.parquet"}, params={"model_dir": "results/models/teacher"}, config=CONFIG)
    args = stage_arguments(job, score)
    assert args["model"] == "teacher" and args["model_dir"] == "results/models/teacher"
    assert trusts_remote_code(args["config"], args["model"]) is True
    assert trusts_remote_code(args["config"], "student") is False
    # What the clash used to hand the stage: a path, which counted as a student.
    assert trusts_remote_code(CONFIG, "results/models/teacher") is False
