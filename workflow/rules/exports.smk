# Exports: each model's generations on a HumanEval, HumanEval+ or LiveCodeBench benchmark in the
# input format of the benchmark's official scorer (evalplus, LiveCodeBench's custom evaluator),
# so that a leafpipe score can be checked with the tool its authors publish
# (docs/benchmarks.md#exports). One job per (model, benchmark), with evaluation.exports on.


from leafpipe.evaluation.exports import EXPORT_FORMATS, export_files

# benchmark -> its export file's suffix (evalplus.jsonl, livecodebench.json)
EXPORTS = export_files(config["evaluation"])
EXPORT_TARGETS = [
    f"{R}/seed-{seed}/exports/{model}/{benchmark}.{suffix}"
    for seed in SEEDS
    for model in MODELS
    for benchmark, suffix in EXPORTS.items()
]


wildcard_constraints:
    export_suffix="|".join(sorted({fmt.suffix for fmt in EXPORT_FORMATS.values()})).replace(
        ".", r"\."
    ),


rule export_samples:
    input:
        generations=generations,
        bench_path=f"{RS}/eval_data/{{benchmark}}.jsonl",
        info_path=f"{RS}/eval_data/{{benchmark}}.info.json",
    output:
        out_path=f"{RS}/exports/{{model}}/{{benchmark}}.{{export_suffix}}",
    log:
        f"{RS}/logs/export_samples/{{model}}/{{benchmark}}.{{export_suffix}}.log",
    benchmark:
        f"{RS}/benchmarks/export_samples/{{model}}/{{benchmark}}.{{export_suffix}}.tsv"
    conda:
        ENV
    params:
        settings=settings_of("export_samples"),
    script:
        STAGE
