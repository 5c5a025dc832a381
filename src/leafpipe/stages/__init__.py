"""One function per pipeline stage, files in and files out, by phase of LeaF.

The Snakemake rules (through `leafpipe.execution.adapter`) and the `leafpipe` command line both
call these by the rule's name, so a rule and its hand-run equivalent can never drift apart.
Every output is written atomically.
"""

from leafpipe.models.loading import load_model, load_placed_model, trusts_remote_code
from leafpipe.stages.analysis import attention
from leafpipe.stages.common import shard_rows
from leafpipe.stages.detection import (
    counterfactuals,
    detect,
    gather_scores,
    inspect,
    score,
    validate_counterfactuals,
)
from leafpipe.stages.evaluation import benchmark_data, generate, grade
from leafpipe.stages.prepare import (
    corpus,
    derive_model,
    import_gguf,
    pretrain,
    tokenizer,
    world,
)
from leafpipe.stages.reporting import report
from leafpipe.stages.training import distill, teacher_logits

__all__ = [
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
    "shard_rows",
    "load_model",
    "load_placed_model",
    "trusts_remote_code",
]
