"""The mutation runner (bench/mutation_*.py) on a snippet and a tiny module + test pair: the
operators plant the expected mutants, and a forked run kills a mutant its test notices and
reports one it does not."""

import sys
import textwrap
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from mutation_operators import mutants, mutated_source  # noqa: E402
from mutation_runner import KILLED, SURVIVED, Job, run_jobs  # noqa: E402

SNIPPET = textwrap.dedent(
    '''\
    """Docstring: never mutated."""
    import logging

    __all__ = ["f"]
    log = logging.getLogger(__name__)


    def f(a: int, b: int = 0) -> int:
        """Neither is this."""
        log.info("a %d", a + 1)
        if a < b and not a:
            raise ValueError(f"bad {a - 1}")
        return max(pow(a, b), -a) - round(a * b, ndigits=2)
    '''
)


def test_operators_plant_the_expected_mutants_and_skip_text_types_and_reporting():
    found = {m.id.removeprefix("snip:"): (m.before, m.after) for m in mutants(SNIPPET, "snip")}
    total = "max(pow(a, b), -a) - round(a * b, ndigits=2)"
    assert found == {
        "8:23:0->1": ("0", "1"),
        "11:17:drop_Not": ("not a", "a"),
        "11:7:And->Or": ("a < b and (not a)", "a < b or not a"),
        "11:7:Lt->LtE": ("a < b", "a <= b"),
        "13:11:Sub->Add": (total, total.replace(" - ", " + ")),
        "13:15:swap_args": ("pow(a, b)", "pow(b, a)"),  # not max's: it is commutative
        "13:26:drop_USub": ("-a", "a"),
        "13:32:drop_kw_ndigits": ("round(a * b, ndigits=2)", "round(a * b)"),
        "13:38:Mult->Div": ("a * b", "a / b"),
        "13:4:return_None": (f"return {total}", "return None"),
        "13:53:2->3": ("2", "3"),
    }


def test_only_the_named_functions_are_mutated():
    source = "def f(x):\n    return x + 1\n\n\ndef g(x):\n    return x - 1\n"
    assert {m.id for m in mutants(source, "m", ["g"])} == {
        "m:6:4:return_None",
        "m:6:11:Sub->Add",
        "m:6:15:1->0",
    }


def test_a_forked_run_kills_a_noticed_mutant_and_reports_an_unnoticed_one(tmp_path):
    module = tmp_path / "tinymod.py"
    module.write_text("def double(x):\n    return x * 2\n\n\ndef unused(x):\n    return x + 1\n")
    (tmp_path / "test_tinymod.py").write_text(
        "from tinymod import double\n\n\ndef test_double():\n    assert double(3) == 6\n"
    )
    source = module.read_text()
    by_id = {m.id: m for m in mutants(source, "tinymod")}
    noticed, unnoticed = by_id["tinymod:2:11:Mult->Div"], by_id["tinymod:6:11:Add->Sub"]
    jobs = [
        # --rootdir: node ids relative to tmp_path wherever the checkout lives (under /tmp too)
        Job(
            m.id,
            (str(tmp_path), "--rootdir", str(tmp_path)),
            "tinymod",
            str(module),
            mutated_source(source, m),
            60,
        )
        for m in (noticed, unnoticed)
    ]
    outcomes = run_jobs(jobs, [tmp_path], workers=2)
    assert outcomes[noticed.id].status == KILLED
    assert outcomes[noticed.id].first_failure == "test_tinymod.py::test_double"
    assert outcomes[unnoticed.id].status == SURVIVED
    assert module.read_text() == source  # served from memory, never written


def test_each_comparison_of_a_chain_is_its_own_mutant():
    ids = {m.id for m in mutants("def f(a, b):\n    return 0 < a < b\n", "m")}
    assert {"m:2:11:Lt->LtE@1", "m:2:11:Lt->LtE@2"} <= ids
