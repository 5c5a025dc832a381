# The confounder world: data with planted distractors, a tokenizer, and teacher/student models.


rule world:
    output:
        splits=expand("{RS}/world/{split}.jsonl", RS=RS, split=WORLD_SPLITS),
    log:
        f"{RS}/logs/world.log",
    benchmark:
        f"{RS}/benchmarks/world.tsv"
    conda:
        ENV
    params:
        settings=settings_of("world"),
        out_dir=lambda wc, output: os.path.dirname(output.splits[0]),
    script:
        STAGE


rule tokenizer:
    input:
        corpora=expand(
            "{RS}/world/{split}.jsonl",
            RS=RS,
            split=["teacher_train", "student_train", "distill_train"],
        ),
    output:
        out_dir=directory(f"{RS}/tokenizer"),
    log:
        f"{RS}/logs/tokenizer.log",
    benchmark:
        f"{RS}/benchmarks/tokenizer.tsv"
    conda:
        ENV
    params:
        settings=settings_of("tokenizer"),
    script:
        STAGE


rule pretrain:
    input:
        tokenizer_dir=f"{RS}/tokenizer",
        train_path=f"{RS}/world/{{role}}_train.jsonl",
    output:
        out_dir=directory(f"{RS}/models/{{role}}"),
    log:
        f"{RS}/logs/pretrain/{{role}}.log",
    benchmark:
        f"{RS}/benchmarks/pretrain/{{role}}.tsv"
    wildcard_constraints:
        role=roles_from("trained"),
    conda:
        ENV
    threads: job_threads("pretrain")
    resources:
        **job_resources("pretrain"),
    params:
        settings=settings_of("pretrain"),
    script:
        STAGE
