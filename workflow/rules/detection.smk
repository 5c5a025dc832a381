# Stage 1 of LeaF: gradient scores, confounder detection, counterfactual samples.


rule score:
    input:
        weights=model_input,  # not "model": that name is the wildcard the stage receives
        corpus_path=CORPUS,
    output:
        out_path=f"{RS}/scores/{{model}}/shard-{{shard}}.parquet",
    log:
        f"{RS}/logs/score/{{model}}/shard-{{shard}}.log",
    benchmark:
        f"{RS}/benchmarks/score/{{model}}/shard-{{shard}}.tsv"
    conda:
        ENV
    threads: job_threads("score")
    resources:
        **job_resources("score"),
    params:
        # With the detection rules, which decide how the response is cut into scored scopes.
        settings=settings_of("score"),
        model_dir=lambda wc, input: input.weights or model_location(wc.model, wc),
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
    params:
        settings=settings_of("gather_scores"),
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
    log:
        f"{RS}/logs/detect.log",
    benchmark:
        f"{RS}/benchmarks/detect.tsv"
    conda:
        ENV
    params:
        settings=settings_of("detect"),
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
    params:
        settings=settings_of("counterfactuals"),
    script:
        STAGE


rule validate_counterfactuals:
    # Beyond the paper: keep a counterfactual only if the teacher (and, with validity.student, the
    # student) does about as well on its response as on the original's (leafpipe.prune.validity). With
    # validity.check off it copies the rows and loads no model.
    input:
        teacher=lambda wc: model_input(wc, "teacher") if config["validity"]["check"] else [],
        student=lambda wc: (
            model_input(wc, "student")
            if config["validity"]["check"] and config["validity"]["student"]
            else []
        ),
        data_path=f"{RS}/counterfactuals/{{level}}.jsonl",
        corpus_path=CORPUS,
        tokens_path=f"{RS}/detection/tokens.parquet",
    output:
        out_path=f"{RS}/counterfactuals/{{level}}.valid.jsonl",
        out_summary=f"{RS}/counterfactuals/{{level}}.validity.json",
    log:
        f"{RS}/logs/validate_counterfactuals/{{level}}.log",
    benchmark:
        f"{RS}/benchmarks/validate_counterfactuals/{{level}}.tsv"
    conda:
        ENV
    threads: job_threads("validate_counterfactuals")
    resources:
        **job_resources("validate_counterfactuals"),
    params:
        settings=settings_of("validate_counterfactuals"),
        teacher_dir=lambda wc, input: input.teacher or model_location("teacher", wc),
        student_dir=lambda wc, input: input.student or model_location("student", wc),
    script:
        STAGE
