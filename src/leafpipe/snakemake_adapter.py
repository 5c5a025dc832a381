"""Run a stage from inside a Snakemake `script:`; the rule's name is the stage's name.

Named inputs, outputs, params and wildcards are passed to the stage function by name, the config
as the job's replicate sees it, and everything the stage logs or prints on stderr (tqdm progress
included) goes to the rule's log. A name given twice (an input named like a wildcard, say) is an
error: one would silently replace the other, as an input `model=` once replaced the `{model}`
wildcard and applied the student's `trust_remote_code` to the teacher.
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
    """The stage's keyword arguments from the job; every name may come from one place only."""
    sources = {"wildcards": smk.wildcards, "input": smk.input, "output": smk.output, "params": smk.params}
    named = {kind: _named(items) for kind, items in sources.items()}
    seen: dict[str, str] = {"config": "the adapter", "threads": "threads"}
    for kind, items in named.items():
        for name in items:
            if name in seen:
                raise TypeError(f"rule {smk.rule!r}: {kind} {name!r} clashes with {seen[name]} {name!r}; "
                                "rename one of them")
            seen[name] = kind
    available = {k: v for items in named.values() for k, v in items.items()}
    available.update(config=job_config(smk), threads=smk.threads)
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
