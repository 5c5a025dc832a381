"""How leafpipe is installed: pyproject.toml states ranges, requirements/constraints.txt the
versions the tests ran with, and the two must agree; the README, .ci/run and the conda files use
the lock and no CPU-only index (a GPU node must get CUDA torch); vLLM, which pins its own torch,
has its own environment, used by the generate jobs only when the config asks for vLLM."""

import re
from pathlib import Path

import pytest
import yaml
from install_specs import LOCK, PROJECT, REPO, lock_pins, locked_extras, requirements
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from snakemake_runs import MICRO, snakemake


def test_every_pin_of_the_lock_lies_inside_pyprojects_ranges():
    pins = lock_pins()
    outside = [
        f"{req} (locked: {pins[canonicalize_name(req.name)]})"
        for req in requirements(*locked_extras())
        if canonicalize_name(req.name) in pins
        and not req.specifier.contains(pins[canonicalize_name(req.name)], prereleases=True)
    ]
    assert not outside


def test_the_lock_pins_every_runtime_and_test_dependency():
    pins = lock_pins()
    assert [r.name for r in requirements("test") if canonicalize_name(r.name) not in pins] == []


def test_pyproject_states_ranges_not_pins():
    every = [*PROJECT["dependencies"], *sum(PROJECT["optional-dependencies"].values(), [])]
    pinned = [
        r for r in map(Requirement, every) if any(s.operator in ("==", "===") for s in r.specifier)
    ]
    assert pinned == []


def test_the_lock_leaves_out_leafpipe_the_data_packages_and_local_labels():
    data = lock_pins(REPO / "requirements" / "benchmark-data.txt")
    pins = lock_pins()
    assert set(pins) & (set(data) | {"leafpipe"}) == set()
    assert [f"{n}=={v}" for n, v in pins.items() if "+" in v] == []
    assert "torch" in pins


def _ci_command() -> str:
    script = (REPO / ".ci" / "run").read_text()
    return script[script.index("python3 -m venv") :].strip()


def test_the_readme_runs_the_ci_command_with_the_lock():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    assert _ci_command() in [b.strip() for b in blocks]
    assert "-c requirements/constraints.txt" in _ci_command()


def _pip_lines(env_file: Path) -> list[str]:
    """The `pip:` section of a conda environment file."""
    dependencies = yaml.safe_load(env_file.read_text())["dependencies"]
    return next(d["pip"] for d in dependencies if isinstance(d, dict))


@pytest.mark.parametrize("env_file", ["environment.yml", "workflow/envs/leafpipe.yaml"])
def test_the_conda_environments_use_the_lock_and_no_cpu_index(env_file):
    path = REPO / env_file
    assert "download.pytorch.org" not in path.read_text()
    constraints = [line.split(maxsplit=1)[1] for line in _pip_lines(path) if line.startswith("-c ")]
    # Conda runs pip in the environment file's folder (Snakemake's copy: two levels deep too).
    assert [(path.parent / c).resolve() for c in constraints] == [LOCK]


def test_the_vllm_environment_installs_the_vllm_extra_without_the_lock():
    assert _pip_lines(REPO / "workflow" / "envs" / "vllm.yaml") == ["-e ../..[vllm]"]


def _rule_environments(tmp_path: Path, backend: str) -> set[str]:
    """The environment files of the workflow's rules for a config with `backend`, as Snakemake's
    --containerize reports them ("Hashing conda environment ..."), before it needs conda."""
    config = yaml.safe_load(MICRO.read_text())
    config["evaluation"]["backend"] = backend
    configfile = tmp_path / f"{backend}.yaml"
    configfile.write_text(yaml.safe_dump(config))
    proc = snakemake(tmp_path / "results", "--containerize", configfile=configfile)
    return set(re.findall(r"Hashing conda environment (\S+)\.\n", proc.stdout + proc.stderr))


def test_the_vllm_environment_is_used_only_when_the_config_asks_for_vllm(tmp_path):
    assert _rule_environments(tmp_path, "auto") == {"workflow/envs/leafpipe.yaml"}
    assert _rule_environments(tmp_path, "vllm") == {
        "workflow/envs/leafpipe.yaml",
        "workflow/envs/vllm.yaml",
    }
