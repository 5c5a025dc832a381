"""Serve one planted mutant in place of its module, in this process and in every Python process
it starts (a spawned grading worker imports the module afresh, from disk otherwise).

bench/mutation_score.py puts this folder first on PYTHONPATH and names, in `MUTANT_ENV`, a JSON
file holding the module's dotted name, its file and the mutated source. The source file itself is
never written.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

MUTANT_ENV = "LEAFPIPE_MUTANT"


class MutantLoader(importlib.abc.SourceLoader):
    """Loads the mutated source under the real file's name; it keeps no bytecode cache
    (`SourceLoader` caches only for loaders that report path stats)."""

    def __init__(self, path: str, source: str) -> None:
        self.path, self.source = path, source

    def get_filename(self, fullname: str) -> str:
        return self.path

    def get_data(self, path: str) -> bytes:
        return self.source.encode()


class MutantFinder(importlib.abc.MetaPathFinder):
    """Finds the mutated module before the ordinary path finder does."""

    def __init__(self, module: str, path: str, source: str) -> None:
        self.module, self.loader = module, MutantLoader(path, source)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != self.module:
            return None
        return importlib.util.spec_from_file_location(
            fullname, self.loader.path, loader=self.loader
        )


def install(mutant_file: str) -> None:
    """Serve the mutant described in `mutant_file` from now on."""
    with open(mutant_file, encoding="utf-8") as f:
        mutant = json.load(f)
    sys.meta_path.insert(0, MutantFinder(mutant["module"], mutant["path"], mutant["source"]))


if os.environ.get(MUTANT_ENV):
    install(os.environ[MUTANT_ENV])
