"""pyproject.toml's requirements and requirements/constraints.txt's pins, read for the install
tests: the ranges a package admits and the versions the tests ran with."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "constraints.txt"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# Extras outside the lock: vLLM needs another torch than the one the lock pins.
UNLOCKED_EXTRAS = {"vllm"}


def lock_pins(path: Path = LOCK) -> dict[str, str]:
    """The `name==version` lines of a requirements file, by canonical name."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def requirements(*extras: str) -> list[Requirement]:
    """The runtime dependencies and those of `extras`, leafpipe's own extras expanded."""
    found, todo, seen = [Requirement(r) for r in PROJECT["dependencies"]], list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in map(Requirement, PROJECT["optional-dependencies"][extra]):
            if req.name == PROJECT["name"]:
                todo += sorted(req.extras)
            else:
                found.append(req)
    return found


def requirement(name: str, extra: str | None = None) -> Requirement:
    """`name`'s requirement among the runtime dependencies or in `extra`."""
    listed = PROJECT["optional-dependencies"][extra] if extra else PROJECT["dependencies"]
    return next(r for r in map(Requirement, listed) if r.name == name)


def locked_extras() -> list[str]:
    """The extras installed under the lock."""
    return sorted(set(PROJECT["optional-dependencies"]) - UNLOCKED_EXTRAS)
