# The attention analysis: each model's attention from response tokens onto detected confounders
# and other instruction tokens, per layer, on corpus samples held out from distillation.


rule attention:
    input:
        weights=model_input,  # not "model": that name is the wildcard the stage receives
        corpus_path=CORPUS,
        tokens_path=f"{RS}/detection/tokens.parquet",
    output:
        out_path=f"{RS}/attention/{{model}}.csv",
    log:
        f"{RS}/logs/attention/{{model}}.log",
    benchmark:
        f"{RS}/benchmarks/attention/{{model}}.tsv"
    conda:
        ENV
    threads: job_threads("attention")
    resources:
        **job_resources("attention"),
    params:
        settings=settings_of("attention"),
        model_dir=lambda wc, input: input.weights or model_location(wc.model, wc),
    script:
        STAGE
