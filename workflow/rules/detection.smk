# Stage 1 of LeaF: gradient scores, confounder detection, counterfactual samples.


rule score:
    input:
        model=model_input,
        corpus_path=CORPUS,
    output:
        out_path=f"{RS}/scores/{{model}}/shard-{{shard}}.parquet",
    params:
        settings=tracked({**config["scoring"], "response_level": config["detection"]["response_level"]}),
        model_dir=lambda wc, input: input.model or model_location(wc.model, wc),
    log:
        f"{RS}/logs/score/{{model}}/shard-{{shard}}.log",
    benchmark:
        f"{RS}/benchmarks/score/{{model}}/shard-{{shard}}.tsv"
    threads: job_threads("score")
    resources:
        **job_resources("score"),
    conda:
        ENV
    script:
        STAGE


rule gather_scores:
    input:
        shard_paths=expand("{RS}/scores/{{model}}/shard-{shard}.parquet", RS=RS, shard=SHARDS),
    output:
        out_path=f"{RS}/scores/{{model}}.parquet",
    log:
        f"{RS}/logs/gather_scores/{{model}}.log",
    benchmark:
        f"{RS}/benchmarks/gather_scores/{{model}}.tsv"
    conda:
        ENV
    script:
        STAGE


rule detect:
    input:
        teacher_scores=f"{RS}/scores/teacher.parquet",
        student_scores=f"{RS}/scores/student.parquet",
        corpus_path=CORPUS,
    output:
        out_tokens=f"{RS}/detection/tokens.parquet",
        out_metrics=f"{RS}/detection/metrics.json",
    params:
        settings=tracked(config["detection"]),
    log:
        f"{RS}/logs/detect.log",
    benchmark:
        f"{RS}/benchmarks/detect.tsv"
    conda:
        ENV
    script:
        STAGE


rule counterfactuals:
    input:
        corpus_path=CORPUS,
        tokens_path=f"{RS}/detection/tokens.parquet",
    output:
        out_path=f"{RS}/counterfactuals/{{level}}.jsonl",
    log:
        f"{RS}/logs/counterfactuals/{{level}}.log",
    benchmark:
        f"{RS}/benchmarks/counterfactuals/{{level}}.tsv"
    conda:
        ENV
    script:
        STAGE
