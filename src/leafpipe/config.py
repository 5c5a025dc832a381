"""Configuration: one JSON schema, used by the Snakefile and the command line alike."""

from __future__ import annotations

import copy
import glob
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from leafpipe.distill.spec import DistillSpec
from leafpipe.distill.variants import variant
from leafpipe.evaluation.sampling import SamplingSpec
from leafpipe.tracking.spec import TrackingSpec, TrackingUnavailable

SCHEMA = Path(__file__).parent / "schema" / "config.schema.yaml"
# owner/name, as on the Hugging Face hub; anything else must be a local path that exists.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ConfigError(ValueError):
    pass


def validate_config(config: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """Validate against the schema, fill defaults, and check that named files exist; with a
    single seed, also set `seed` and `world.seed` to it (`for_seed`)."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    config = copy.deepcopy(config)
    try:
        validate(config, str(SCHEMA), set_default=True)
    except WorkflowError as err:
        raise ConfigError(f"{where}: {err}") from None
    check_seeds(config, where)
    check_paths(config, where)
    check_distill(config, where)
    check_tracking(config, where)
    # A config of one seed is its replicate's config: stages called with it read its seed.
    return for_seed(config) if len(config["seeds"]) == 1 else config


def check_seeds(config: dict[str, Any], where: str = "config") -> None:
    """`seeds` replaced `seed` and `world.seed`: those two are what one replicate's jobs read
    (`for_seed` sets them), so a config may carry them only as that replicate's own, equal to
    its single seed. An older config's `seed: 0` with `world.seed: 1` is refused, not guessed at."""
    given = {"seed": config.get("seed"), "world.seed": config["world"].get("seed")}
    given = {key: value for key, value in given.items() if value is not None}
    seeds = config["seeds"]
    if given and (len(seeds) != 1 or set(given.values()) != set(seeds)):
        written = ", ".join(f"{key}: {value}" for key, value in given.items())
        raise ConfigError(
            f"{where}: {written}: `seed` and `world.seed` are one setting now, `seeds` "
            "(a list: one replicate of the whole run per seed, its world generated with that "
            "seed); write "
            f"`seeds: [{next(iter(given.values()))}]` and remove them (seeds here: {seeds})"
        )


def for_seed(config: dict[str, Any], seed: int | None = None) -> dict[str, Any]:
    """The config one replicate's jobs see: `seed` (training, sampling) and `world.seed` set to
    `seed`, and `seeds` to it alone, so that it validates again as the same replicate (the
    data-parallel launcher passes it on as a file). None: the config's only seed. The caller's
    config is not changed."""
    seeds = config["seeds"]
    if seed is None and len(seeds) > 1:
        raise ConfigError(f"the config has seeds {seeds}: say which replicate")
    seed = seeds[0] if seed is None else seed
    if seed not in seeds:
        raise ConfigError(f"seed {seed} is not one of the config's seeds {seeds}")
    replicate = copy.deepcopy(dict(config))
    replicate.update(seed=seed, seeds=[seed], world={**replicate["world"], "seed": seed})
    return replicate


def check_distill(config: dict[str, Any], where: str = "config") -> None:
    """Distillation settings that only make sense together, and LoRA's optional dependency."""
    import importlib.util

    d = config["distill"]
    try:
        for name in d["variants"]:
            variant(name)
        DistillSpec.from_config(d, objective="kd", seed=0)  # the spec's own checks, once
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from None
    if d["lora"] and importlib.util.find_spec("peft") is None:
        raise ConfigError(
            f"{where}: distill.lora is set but peft is not installed; "
            "pip install 'leafpipe[lora]' or set distill.lora: null"
        )
    if d["kd"]["backend"] == "liger" and d["teacher_topk"] is not None:
        raise ConfigError(
            f"{where}: distill.kd.backend: liger applies the teacher's LM head inside the loss "
            "and cannot read the top-k cache that distill.teacher_topk makes; set one of them "
            "back (teacher_topk: null or kd.backend: chunked)"
        )


def check_tracking(config: dict[str, Any], where: str = "config") -> None:
    """The run name's fields, and the backends of `report_to` installed: a missing one fails
    here, before any job starts, not when training has run for hours."""
    try:
        TrackingSpec.from_config(config).require()
    except (ValueError, TrackingUnavailable) as err:
        raise ConfigError(f"{where}: {err}") from None


MODEL_ORIGINS = ("path", "gguf", "derive")
CORPUS_ORIGINS = ("path", "benchmark", "hub", "dataset")
BENCHMARK_ORIGINS = ("path", "hub", "dataset")


def model_role(model: str) -> str:
    """The role whose settings (`trust_remote_code`) a model follows: a distilled variant is a
    student, and so is trusted exactly as far as the student."""
    return "teacher" if model == "teacher" else "student"


def weights_origin(config: Mapping[str, Any], role: str) -> str:
    """Where a role's weights come from: the user's `path`, a `gguf` file, `derive`d from another
    role, or `trained` from scratch on the world."""
    return next(iter(given_origins(config["models"][role], MODEL_ORIGINS)), "trained")


def given_origins(section: dict[str, Any], keys: Sequence[str]) -> list[str]:
    """Which of a section's alternative origins are set (a valid config has at most one)."""
    return [key for key in keys if section.get(key)]


# What a shell expands inside a double-quoted string, and what closes one.
_SHELL_ACTIVE = re.compile(r"[$`\\\"'\n]")


def check_sbatch_safe_paths(
    config: dict[str, Any], configfiles: Sequence[str], workdir: str
) -> None:
    """Refuse paths that would run as shell code when jobs go to SLURM.

    snakemake-executor-plugin-slurm 2.8.0 pastes each job's command line (its input paths, the
    config file paths, the working directory) into `sbatch --wrap="..."` and escapes only '"',
    so a `$(...)` or backtick in any of them would run on the submitting node.
    """
    import sys

    named: dict[str, Any] = {
        "results": config["results"],
        "working directory": workdir,
        "python": sys.executable,
    }
    for role, model in config["models"].items():
        named[f"models.{role}.path"] = model.get("path")
        named[f"models.{role}.gguf.file"] = (model.get("gguf") or {}).get("file")
    named["corpus.path"] = config["corpus"].get("path")
    named["corpus.dataset"] = " ".join(local_dataset_files(config["corpus"].get("dataset")))
    for name, bench in config["evaluation"]["benchmarks"].items():
        named[f"evaluation.benchmarks.{name}.path"] = bench.get("path")
        named[f"evaluation.benchmarks.{name} files"] = " ".join(benchmark_local_files(bench))
    named.update({f"--configfile {i + 1}": path for i, path in enumerate(configfiles)})
    bad = [
        f"{key} {str(value)!r}"
        for key, value in named.items()
        if value and _SHELL_ACTIVE.search(str(value))
    ]
    if bad:
        raise ConfigError(
            "SLURM jobs cannot use paths with $, `, \\, quotes or newlines "
            "(the slurm executor would run them as shell code)"
            f": {'; '.join(bad)}. Rename them or use a symlink."
        )


def check_paths(config: dict[str, Any], where: str = "config") -> None:
    """A missing corpus, benchmark or local model is an error before any job runs."""
    from leafpipe.evaluation.registry import entry_kind

    for role, model in config["models"].items():
        origins = given_origins(model, MODEL_ORIGINS)
        if len(origins) > 1:
            raise ConfigError(
                f"{where}: models.{role}: give one of path, gguf, derive, "
                f"not {' and '.join(origins)}"
            )
        derive = model.get("derive")
        if derive and (derive["from"] == role or config["models"][derive["from"]].get("derive")):
            raise ConfigError(
                f"{where}: models.{role}.derive.from: must name a model that is not itself derived"
            )
        path = model.get("path")
        if path and not Path(path).exists() and not _HUB_ID.match(path):
            raise ConfigError(
                f"{where}: models.{role}.path: no such folder {path!r} (and not a hub id)"
            )
    corpus = config["corpus"].get("path")
    if corpus and not Path(corpus).is_file():
        raise ConfigError(f"{where}: corpus.path: no such file {corpus!r}")
    check_corpus_disjoint(config, where)
    for name, bench in config["evaluation"]["benchmarks"].items():
        entry = f"{where}: evaluation.benchmarks.{name}"
        kind = entry_kind(bench)
        check_benchmark_path(entry, bench, kind)
        check_kind_fits(entry, bench, kind)
        if (kind == "world") != ("split" in bench):
            raise ConfigError(f"{entry}: a `split` belongs to kind world, and kind world needs one")
        given = given_origins(bench, BENCHMARK_ORIGINS)
        if len(given) > 1:
            raise ConfigError(f"{entry}: give one of path, hub, dataset, not {' and '.join(given)}")
        if kind == "jsonl" and not {"path", "dataset"} & set(given):
            raise ConfigError(f"{entry}: kind jsonl needs a `path` or a `dataset`")
        try:
            SamplingSpec(n=bench["n"], temperature=bench["temperature"], top_p=bench["top_p"])
        except ValueError as e:
            raise ConfigError(f"{entry}: {e}") from None
        if max(bench["k"]) > bench["n"]:
            raise ConfigError(
                f"{entry}: pass@{max(bench['k'])} needs n >= {max(bench['k'])} "
                "completions per problem"
            )


def check_benchmark_path(entry: str, bench: dict[str, Any], kind: str) -> None:
    """A benchmark's `path` is a file, except where its kind reads a folder: LeetCode's templates
    (`BenchmarkKind.read_folder`, a file or a folder) and a `release`'s files (a folder only)."""
    from leafpipe.evaluation.kinds import KINDS

    path = bench.get("path")
    if path is None:
        return
    if bench.get("release"):
        if not Path(path).is_dir():
            raise ConfigError(
                f"{entry}.path: no such folder {path!r}: with `release`, `path` is the folder "
                "holding the release's files (test.jsonl, test2.jsonl, ...)"
            )
    elif kind in KINDS and KINDS[kind].read_folder is not None:
        if not Path(path).exists():
            raise ConfigError(f"{entry}.path: no such file or folder {path!r}")
    elif not Path(path).is_file():
        folders = [k.name for k in KINDS.values() if k.read_folder is not None]
        raise ConfigError(
            f"{entry}.path: no such file {path!r} (kind {kind} reads one file; a folder is read "
            f"only by kind {', '.join(folders)} and by a `release`)"
        )


def check_kind_fits(entry: str, bench: dict[str, Any], kind: str) -> None:
    """Settings that only some kinds take: `release` and a date window (kinds published in
    releases), `code_tests` (code kinds), and a `protocol` that asks only some kinds
    (`Protocol.fits`). Refused here, not
    when the benchmark's job runs."""
    from leafpipe.evaluation.kinds import KINDS
    from leafpipe.evaluation.protocols import PROTOCOLS, protocol_of

    released = [k.name for k in KINDS.values() if k.releases is not None]
    dated = [key for key in ("release", "start_date", "end_date") if key in bench]
    if dated and kind not in released:
        raise ConfigError(
            f"{entry}: {', '.join(dated)}: only kind {', '.join(released)} has releases and "
            f"dated rows, not kind {kind}"
        )
    if "code_tests" in bench and not (kind in KINDS and KINDS[kind].task == "code"):
        raise ConfigError(f"{entry}.code_tests: only code kinds run tests, not kind {kind}")
    protocol = protocol_of(bench)
    if not protocol.fits(kind):
        fitting = [p.name for p in PROTOCOLS.values() if p.fits(kind)]
        raise ConfigError(
            f"{entry}.protocol: {protocol.name} asks only kinds "
            f"{', '.join(sorted(protocol.kinds or ()))}, not kind {kind} "
            f"(protocols for kind {kind}: {', '.join(fitting)})"
        )


def check_corpus_disjoint(config: dict[str, Any], where: str = "config") -> None:
    """A corpus cut from a benchmark must start after the rows that benchmark is evaluated on
    (rule corpus checks the ids too; this fails before any job runs)."""
    from leafpipe.evaluation.registry import entry_kind

    corpus = config["corpus"]
    given = given_origins(corpus, CORPUS_ORIGINS)
    if len(given) > 1:
        raise ConfigError(
            f"{where}: corpus: give one of {', '.join(CORPUS_ORIGINS)}, not {' and '.join(given)}"
        )
    kind = corpus.get("benchmark")
    if not kind:
        return
    for name, bench in config["evaluation"]["benchmarks"].items():
        if entry_kind(bench) != kind or given_origins(bench, BENCHMARK_ORIGINS):
            continue
        if bench.get("limit", float("inf")) > corpus["skip"]:
            raise ConfigError(
                f"{where}: evaluation.benchmarks.{name}: "
                f"evaluates {kind} rows the corpus trains on; "
                f"set its limit to at most corpus.skip ({corpus['skip']})"
            )


# `datasets` builders that read local files (with data_files): naming one is not a hub lookup.
_LOCAL_BUILDERS = frozenset({"parquet", "json", "csv", "text", "arrow"})


def _dataset_origin(name: str) -> Literal["folder", "builder", "hub"]:
    """Where a `dataset:` spec's `dataset` is read from: a local folder, a builder over local
    `data_files`, or the hub."""
    if Path(name).exists():
        return "folder"
    return "builder" if name in _LOCAL_BUILDERS else "hub"


def _hub_dataset(spec: dict[str, Any] | None) -> bool:
    """Whether a `dataset:` spec names a hub dataset (not a local folder or file builder)."""
    return bool(spec) and _dataset_origin(str(spec["dataset"])) == "hub"


def local_files(path: str | Path) -> list[str]:
    """A local file, or every file under a local folder (not inside hidden folders such as
    `.cache` or `.git`), in sorted order: what a job reading it depends on."""
    root = Path(path)
    if root.is_file():
        return [str(root)]
    return sorted(
        str(file)
        for file in root.rglob("*")
        if file.is_file() and not any(part.startswith(".") for part in file.relative_to(root).parts)
    )


def local_dataset_files(spec: Mapping[str, Any] | None) -> list[str]:
    """The local files a `dataset:` spec reads, so that its rule reruns when one changes: a
    folder's files (its README.md's `configs:` included), or a builder's `data_files` (globs
    expanded as the job's working directory sees them); none for a hub dataset: nothing here
    to track (its `revision` pins it)."""
    if not spec:
        return []
    origin = _dataset_origin(str(spec["dataset"]))
    if origin != "builder":
        return local_files(spec["dataset"]) if origin == "folder" else []
    patterns = _data_file_patterns(spec.get("data_files"))
    found = {file for pattern in patterns for file in glob.glob(pattern, recursive=True)}
    return sorted(file for match in found for file in local_files(match))


def benchmark_local_files(bench: Mapping[str, Any]) -> list[str]:
    """The local files a benchmark entry's rows come from besides a `path` file: those of a
    `path` folder (LeetCode templates, a release's files) or of a local `dataset`."""
    path = bench.get("path")
    if path and Path(path).is_dir():
        return local_files(path)
    return local_dataset_files(bench.get("dataset"))


def _data_file_patterns(data_files: Any) -> list[str]:
    """The paths and globs of `data_files` (a string, a list, or {split: either}), less URLs."""
    if isinstance(data_files, Mapping):
        return [p for value in data_files.values() for p in _data_file_patterns(value)]
    listed = [data_files] if isinstance(data_files, str) else list(data_files or [])
    return [str(p) for p in listed if "://" not in str(p)]


def _hub_data(config: dict[str, Any]) -> bool:
    """Whether the corpus or a benchmark is named on the hub: a hub file, a hub dataset, or a
    LiveCodeBench release with no local folder."""
    corpus = config["corpus"]
    benches = config["evaluation"]["benchmarks"].values()
    return (
        bool(corpus.get("hub"))
        or _hub_dataset(corpus.get("dataset"))
        or any(
            b.get("hub")
            or _hub_dataset(b.get("dataset"))
            or (b.get("release") and not b.get("path"))
            for b in benches
        )
    )


def go_offline_unless_hub_needed(config: dict[str, Any]) -> None:
    """Set the Hugging Face offline switches unless a model or data is named on the hub.

    Offline, a stray hub lookup fails at once instead of after ~50 s of network time-outs;
    a user who names a hub model or hub data keeps network access.
    """
    hub = any(m.get("path") and not Path(m["path"]).exists() for m in config["models"].values())
    if not (hub or _hub_data(config)):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def load_config(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh) or {}
    return validate_config(raw, str(path))
