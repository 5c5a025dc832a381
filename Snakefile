# LeaF (Learning to Focus): causal attention distillation via gradient-guided token pruning.
# Science settings live in config/ (validated against leafpipe's schema before any job runs);
# execution settings (cores, GPUs, cluster) live in profiles/.
from snakemake.utils import min_version

import os

from leafpipe.config import check_sbatch_safe_paths, go_offline_unless_hub_needed, validate_config

min_version("9.0")


# A --configfile replaces the default instead of being merged into it, so a config never
# inherits the confounder world's benchmarks or sizes by accident.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


_validated = validate_config(config, "config")
config.clear()
config.update(_validated)
go_offline_unless_hub_needed(config)


onstart:
    # Only once the executor is known (it is not while the Snakefile is read); local runs take any path.
    if workflow.executor_plugin is not None and workflow.executor_plugin.name == "slurm":
        check_sbatch_safe_paths(
            config, [str(f) for f in workflow.overwrite_configfiles], os.getcwd()
        )


include: "workflow/rules/common.smk"
include: "workflow/rules/world.smk"
include: "workflow/rules/pretrained.smk"
include: "workflow/rules/detection.smk"
include: "workflow/rules/inspection.smk"
include: "workflow/rules/distillation.smk"
include: "workflow/rules/attention.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/exports.smk"
include: "workflow/rules/lm_eval.smk"


rule all:
    default_target: True
    input:
        rules.report.output,
        every_product(),
        EXPORT_TARGETS,
        LM_EVAL_TARGETS,
