"""`leafpipe STAGE ...`: run any pipeline stage by hand, with the same code the rules run.

Each subcommand's options are the stage function's parameters (`--model-dir`, `--out-path`, ...),
so `leafpipe score --help` always matches what the `score` rule passes.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from leafpipe import stages
from leafpipe.config import (
    ConfigError,
    for_seed,
    go_offline_unless_hub_needed,
    load_config,
)
from leafpipe.stages.specs import stage_config

STAGES: dict[str, Callable[..., None]] = {
    name: getattr(stages, name)
    for name in (
        "world",
        "tokenizer",
        "pretrain",
        "import_gguf",
        "derive_model",
        "corpus",
        "score",
        "gather_scores",
        "detect",
        "inspect",
        "counterfactuals",
        "validate_counterfactuals",
        "teacher_logits",
        "distill",
        "attention",
        "benchmark_data",
        "generate",
        "grade",
        "report",
        "export_samples",
        "lm_eval",
    )
}


def _add_stage(sub: Any, name: str, func: Callable[..., None]) -> None:
    doc = (inspect.getdoc(func) or f"Run the {name} stage.").splitlines()[0]
    parser = sub.add_parser(name, help=doc, description=doc)
    parser.add_argument(
        "--configfile", default="config/config.yaml", help="validated like the Snakefile's"
    )
    if name != "report":  # the report pools every replicate
        parser.add_argument(
            "--seed",
            type=int,
            default=None,
            help="the replicate to run, one of the config's seeds (needed when it has several)",
        )
    for pname, param in inspect.signature(func).parameters.items():
        if pname == "config":
            continue
        flag = "--" + pname.replace("_", "-")
        if pname == "threads":
            parser.add_argument(flag, type=int, default=None, help="torch CPU threads")
        else:
            # A parameter with a default is optional here too (`score --shard`, `corpus
            # --held-out`), with the stage's own default.
            optional = param.default is not param.empty
            many = {"nargs": "+"} if "Sequence" in str(param.annotation) else {}
            parser.add_argument(
                flag,
                dest=pname,
                required=not optional,
                default=param.default if optional else None,
                **many,
            )
    parser.set_defaults(stage=name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leafpipe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser(
        "validate", help="validate a config file and print it with defaults filled in"
    )
    check.add_argument("configfile")
    planner = sub.add_parser(
        "plan",
        help="print each job's GPU memory, host memory, disk and GPU-hours against "
        "its resources; exit 1 when a job cannot fit",
    )
    planner.add_argument("configfile")
    for name, func in STAGES.items():
        _add_stage(sub, name, func)
    return parser


def _plan(config: dict[str, Any]) -> int:
    """Print the planner's table; 1, with the failing jobs' numbers on stderr, when any cannot
    fit."""
    from leafpipe.execution.plan import failure_report, plan, table

    rows = plan(config)
    print(table(rows))
    failures = failure_report(rows)
    if failures:
        print(f"leafpipe plan: jobs that cannot fit:\n{failures}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        config = load_config(args.pop("configfile"))
    except (ConfigError, OSError) as err:
        print(f"leafpipe: {err}", file=sys.stderr)
        return 2
    command = args.pop("command")
    if command == "validate":
        import yaml

        print(yaml.safe_dump(config, sort_keys=False), end="")
        return 0
    if command == "plan":
        return _plan(config)
    go_offline_unless_hub_needed(config)
    if "seed" in args:  # every stage but the report runs one replicate
        try:
            config = for_seed(config, args.pop("seed"))
        except ConfigError as err:
            print(f"leafpipe: {err} (--seed)", file=sys.stderr)
            return 2
    name = args.pop("stage")
    func = STAGES[name]
    if "config" in inspect.signature(func).parameters:
        # The stage's arguments name its job as the wildcards do (--role, --model, --benchmark).
        args["config"] = stage_config(name, config, args)
    func(**args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
