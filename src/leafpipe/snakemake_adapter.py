"""Run a stage from inside a Snakemake `script:`; the rule's name is the stage's name.

Named inputs, outputs, params and wildcards are passed to the stage function by name, the config
as the job's replicate sees it, and everything the stage logs or prints on stderr (tqdm progress
included) goes to the rule's log.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
from typing import Any

from leafpipe import stages
from leafpipe.config import for_seed


def _named(items: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in items.items()}


def job_config(smk: Any) -> dict[str, Any]:
    """The config a job's stage reads: its replicate's (`config.for_seed`) when the rule has a
    `{seed}` wildcard, the whole run's for the pooled report."""
    seed = dict(smk.wildcards.items()).get("seed")
    return smk.config if seed is None else for_seed(smk.config, int(seed))


def stage_arguments(smk: Any, func: Any) -> dict[str, Any]:
    available = {
        **_named(smk.wildcards), **_named(smk.input), **_named(smk.output), **_named(smk.params),
        "config": job_config(smk), "threads": smk.threads,
    }
    wanted = inspect.signature(func).parameters
    missing = [n for n, p in wanted.items() if n not in available and p.default is p.empty]
    if missing:
        raise TypeError(f"rule {smk.rule!r} does not provide {missing} to leafpipe.stages.{func.__name__}")
    return {n: available[n] for n in wanted if n in available}


def run(smk: Any) -> None:
    func = getattr(stages, smk.rule)
    with open(smk.log[0], "a", encoding="utf-8", buffering=1) as log_file, contextlib.redirect_stderr(log_file):
        handler = logging.StreamHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            func(**stage_arguments(smk, func))
        except Exception:
            logging.getLogger("leafpipe").exception("rule %s failed", smk.rule)
            raise
        finally:
            root.removeHandler(handler)
            sys.stderr.flush()
