"""Run a stage from inside a Snakemake `script:`; the rule's name is the stage's name.

Named inputs, outputs, params and wildcards are passed to the stage function by name, the config
as the job's replicate sees it, cut down to what the stage declares it reads
(`leafpipe.stages.specs`), and everything the stage logs or prints on stderr (tqdm progress
included) goes to the rule's log. A name given twice (an input named like a wildcard, say) is an
error: one would silently replace the other, as an input `model=` once replaced the `{model}`
wildcard and applied the student's `trust_remote_code` to the teacher.

Before the stage starts, the job claims the GPUs of its `gpu` resource
(`leafpipe.execution.devices`), so it sees those and no others. A job that failed with an error
certain to recur (`recurs`) leaves a record next to its log (`<log>.no-retry`), and Snakemake's
next attempt of it fails at once instead of loading its models to meet the same error again.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from leafpipe import stages
from leafpipe.config import for_seed
from leafpipe.data.hf_dataset import DatasetUnavailable
from leafpipe.execution.devices import claim_gpus
from leafpipe.files.atomic import write_json
from leafpipe.stages.specs import stage_config

log = logging.getLogger("leafpipe")

NO_RETRY = ".no-retry"  # suffix of the record a failed attempt leaves next to the job's log


def _named(items: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in items.items()}


def job_config(smk: Any) -> dict[str, Any]:
    """The config a job's stage reads: its replicate's (`config.for_seed`) when the rule has a
    `{seed}` wildcard, the whole run's for the pooled report."""
    seed = dict(smk.wildcards.items()).get("seed")
    return smk.config if seed is None else for_seed(smk.config, int(seed))


def stage_arguments(smk: Any, func: Any) -> dict[str, Any]:
    """The stage's keyword arguments from the job; every name may come from one place only."""
    sources = {
        "wildcards": smk.wildcards,
        "input": smk.input,
        "output": smk.output,
        "params": smk.params,
    }
    named = {kind: _named(items) for kind, items in sources.items()}
    seen: dict[str, str] = {"config": "the adapter", "threads": "threads"}
    for kind, items in named.items():
        for name in items:
            if name in seen:
                raise TypeError(
                    f"rule {smk.rule!r}: {kind} {name!r} clashes with {seen[name]} {name!r}; "
                    "rename one of them"
                )
            seen[name] = kind
    available = {k: v for items in named.values() for k, v in items.items()}
    available.update(
        config=stage_config(smk.rule, job_config(smk), named["wildcards"]), threads=smk.threads
    )
    wanted = inspect.signature(func).parameters
    missing = [n for n, p in wanted.items() if n not in available and p.default is p.empty]
    if missing:
        raise TypeError(
            f"rule {smk.rule!r} does not provide {missing} to leafpipe.stages.{func.__name__}"
        )
    return {n: available[n] for n in wanted if n in available}


RECURRING = (ValueError, TypeError, KeyError, FileNotFoundError, DatasetUnavailable)
MISMATCH = re.compile(  # torch's wording for tensors whose shapes or devices do not match
    r"same device|is not on the expected device|size mismatch|must match the size of tensor"
    r"|Sizes of tensors must match|shapes cannot be multiplied|is invalid for input of size"
    r"|Attempting to broadcast a dimension"
)


class NotRetried(RuntimeError):
    """This attempt of a job was not run: an earlier one failed with an error that recurs."""


def recurs(err: BaseException) -> bool:
    """Whether `err` is certain to recur when the same job runs again, and so not worth a retry.

    Such an error follows from what a retry does not change: the job's config, its input files
    and the code. That holds for
    - ValueError: the stages' own input checks (a config error is a `ConfigError`, a ValueError)
      and malformed data;
    - TypeError and KeyError: arguments a rule does not bind, a config key or a column that is
      absent;
    - FileNotFoundError: a file the job reads that the config names (Snakemake has already waited
      `latency-wait` for the declared inputs to appear);
    - `DatasetUnavailable`: a dataset the config names that is neither a folder here nor in the
      `datasets` cache while offline (a retry finds the cache as empty);
    - a RuntimeError that says tensors' shapes or devices do not match (`MISMATCH`).
    Anything else may not recur and is retried: out of memory (`torch.OutOfMemoryError`, whose
    retry gets more mem_mb), a job killed for its time or memory (it leaves no record), a
    collective that timed out, a CUDA or file-system fault of one node, a GPU that stayed busy
    (`devices.GpuError`), and a data-parallel process's error, of which its parent sees only
    the exit code.
    """
    if isinstance(err, RECURRING):
        return True
    return isinstance(err, RuntimeError) and MISMATCH.search(str(err)) is not None


def no_retry_record(smk: Any) -> Path:
    return Path(f"{smk.log[0]}{NO_RETRY}")


def attempt(smk: Any) -> int:
    """The job's attempt (1, 2, ... with Snakemake's `retries`), from its `attempt` resource:
    Snakemake tells a script its attempt no other way, and profiles/slurm (where retries are
    set) defines it for every rule. Without it every attempt counts as the first, and runs."""
    return int(smk.resources.get("attempt", 1))


def refuse_a_recurring_retry(smk: Any) -> None:
    """Attempt 1 of a job forgets any record a former run left; a later attempt that finds the
    record of an earlier one fails with its error, running nothing."""
    record = no_retry_record(smk)
    if attempt(smk) == 1:
        record.unlink(missing_ok=True)
    elif record.exists():
        failed = json.loads(record.read_text(encoding="utf-8"))
        # Snakemake emptied the log for this attempt: show the error the record stands for.
        log.error(
            "attempt %d of rule %s failed with:\n%s",
            failed["attempt"],
            smk.rule,
            failed["traceback"],
        )
        raise NotRetried(
            f"rule {smk.rule!r}, attempt {attempt(smk)}: not retried: the same error would recur: "
            f"{failed['error']} (attempt {failed['attempt']}; {record})"
        )


def record_recurring(smk: Any, err: BaseException) -> None:
    if recurs(err):
        write_json(
            {
                "rule": smk.rule,
                "attempt": attempt(smk),
                "error": f"{type(err).__name__}: {err}",
                "traceback": "".join(traceback.format_exception(err)).rstrip(),
            },
            no_retry_record(smk),
        )


def run(smk: Any) -> None:
    func = getattr(stages, smk.rule)
    with (
        open(smk.log[0], "a", encoding="utf-8", buffering=1) as log_file,
        contextlib.redirect_stderr(log_file),
    ):
        handler = logging.StreamHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            refuse_a_recurring_retry(smk)
            with claim_gpus(
                int(smk.resources.get("gpu", 0)),
                rule=smk.rule,
                allow_cpu=smk.config["hardware"]["allow_cpu"],
            ):
                func(**stage_arguments(smk, func))
        except NotRetried as err:
            log.error("%s", err)
            raise
        except Exception as err:
            log.exception("rule %s failed", smk.rule)
            record_recurring(smk, err)
            raise
        finally:
            root.removeHandler(handler)
            sys.stderr.flush()
