# lm-evaluation-harness on every model folder, with its own tasks and prompts (evaluation.lm_eval;
# absent by default, and then no job). The harness is not a leafpipe dependency: the run's
# environment must provide its `lm_eval` command (leafpipe.evaluation.harness).


LM_EVAL = config["evaluation"].get("lm_eval")
LM_EVAL_TARGETS = (
    expand(f"{RS}/lm_eval/{{model}}.json", seed=SEEDS, model=MODELS) if LM_EVAL else []
)


rule lm_eval:
    input:
        weights=model_input,  # not "model": that name is the wildcard the stage receives
    output:
        out_path=f"{RS}/lm_eval/{{model}}.json",
    log:
        f"{RS}/logs/lm_eval/{{model}}.log",
    benchmark:
        f"{RS}/benchmarks/lm_eval/{{model}}.tsv"
    conda:
        ENV
    threads: job_threads("lm_eval")
    resources:
        **job_resources("lm_eval"),
    params:
        settings=settings_of("lm_eval"),
        model_dir=lambda wc, input: input.weights or model_location(wc.model, wc),
    script:
        STAGE
