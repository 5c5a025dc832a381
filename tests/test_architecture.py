"""docs/architecture.md keeps up with the package, and what the Snakefile imports stays light."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "leafpipe"


def test_the_architecture_tree_names_every_module_in_its_folder():
    doc = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    tree = doc.split("```text", 1)[1].split("```", 1)[0]
    listed, folder = set(), []
    for line in tree.splitlines()[1:]:
        match = re.match(r"^([│ ]*)[├└]── (\S+)", line)
        if not match:
            continue
        depth = len(match.group(1)) // 4
        name = match.group(2)
        folder = folder[:depth]
        if name.endswith("/"):
            folder.append(name.rstrip("/"))
        else:
            listed.add("/".join([*folder, name]))
    modules = {
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    }
    assert modules - listed == set(), "modules missing from docs/architecture.md's tree"
    assert listed - modules == set(), "docs/architecture.md lists modules that do not exist"


def test_the_modules_the_snakefile_imports_load_no_torch():
    """Every Snakemake start (each job's too) imports these: torch would add seconds to each."""
    code = (
        "import sys\n"
        "import leafpipe.config, leafpipe.stages.specs, leafpipe.distill.variants\n"
        "import leafpipe.distill.spec, leafpipe.detect.rules, leafpipe.execution.plan\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
