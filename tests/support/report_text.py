"""Reading the report's summary.md in the tests: the model rows it shows and its sections."""

# The row labels of every model of a run with all four variants, in the report's order: the
# teacher and the student it starts from, then each distilled variant.
MODEL_ROWS = [
    "Teacher",
    "Student (pre-KD)",
    "SFT",
    "KD w/o mask",
    "LeaF (instr)",
    "LeaF (instr+resp)",
]


def section(md: str, heading: str) -> str:
    """The text of `md` under `## heading`, up to the next heading (of that level or deeper): a
    check finds its text in the section it belongs to, not anywhere in the report."""
    return md.split(f"## {heading}")[1].split("## ")[0]
