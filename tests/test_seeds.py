"""`seeds:` replicates the run: the config each replicate's jobs see, and old seed keys refused."""

from types import SimpleNamespace

import pytest

from leafpipe.config import ConfigError, for_seed, validate_config
from leafpipe.execution.adapter import job_config

MODELS = {"models": {"teacher": {}, "student": {}}}


def valid(**config):
    return validate_config({**MODELS, **config})


def test_seeds_default_to_one_replicate_of_seed_0_whose_config_it_is():
    config = valid()
    assert (config["seeds"], config["seed"], config["world"]["seed"]) == ([0], 0, 0)


def test_a_replicates_config_sets_the_seed_its_world_and_validates_again():
    config = valid(seeds=[3, 7])
    replicate = for_seed(config, 7)
    assert (replicate["seed"], replicate["world"]["seed"], replicate["seeds"]) == (7, 7, [7])
    assert "seed" not in config and "seed" not in config["world"], "the run's config is left alone"
    # the data-parallel launcher hands it to the CLI as a file, which validates it
    assert validate_config(replicate) == replicate


def test_a_replicate_must_be_one_of_the_seeds_and_named_when_there_are_several():
    config = valid(seeds=[3, 7])
    with pytest.raises(ConfigError, match="not one of the config's seeds"):
        for_seed(config, 4)
    with pytest.raises(ConfigError, match="say which replicate"):
        for_seed(config)
    assert for_seed(valid(seeds=[5]))["seed"] == 5


@pytest.mark.parametrize(
    "old",
    [
        {"seed": 42},
        {"world": {"seed": 1}},
        {"seed": 0, "world": {"seed": 1}},
        {"seeds": [0, 1], "seed": 0},
    ],
)
def test_old_seed_keys_are_refused_with_the_new_spelling(old):
    with pytest.raises(ConfigError, match=r"one setting now, `seeds`.*write `seeds: \["):
        valid(**old)


def test_each_job_gets_its_replicates_config_and_the_report_the_whole_run():
    config = valid(seeds=[0, 1])

    def job(**wildcards):
        return SimpleNamespace(
            wildcards=SimpleNamespace(items=lambda: wildcards.items()), config=config
        )

    assert job_config(job(seed="1", model="kd"))["world"]["seed"] == 1
    assert job_config(job(seed="0"))["seed"] == 0
    assert job_config(job()) is config
