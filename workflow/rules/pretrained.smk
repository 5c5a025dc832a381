# Real pretrained models and the corpus, offline: a GGUF checkpoint made safetensors once, a
# student cut from a model's layers, and the corpus every rule reads (a file checked row by row,
# or a shipped benchmark's worked solutions).


rule import_gguf:
    input:
        gguf=lambda wc: gguf_input(wc.role),
    output:
        out_dir=directory(f"{RS}/models/{{role}}"),
    log:
        f"{RS}/logs/import_gguf/{{role}}.log",
    benchmark:
        f"{RS}/benchmarks/import_gguf/{{role}}.tsv"
    wildcard_constraints:
        role=roles_from("gguf"),
    conda:
        ENV
    threads: job_threads("import_gguf")
    resources:
        **job_resources("import_gguf"),
    params:
        settings=settings_of("import_gguf"),
    script:
        STAGE


rule derive_model:
    input:
        parent_dir=lambda wc: model_input(wc, config["models"][wc.role]["derive"]["from"]),
    output:
        out_dir=directory(f"{RS}/models/{{role}}"),
    log:
        f"{RS}/logs/derive_model/{{role}}.log",
    benchmark:
        f"{RS}/benchmarks/derive_model/{{role}}.tsv"
    wildcard_constraints:
        role=roles_from("derive"),
    conda:
        ENV
    threads: job_threads("derive_model")
    resources:
        **job_resources("derive_model"),
    params:
        settings=settings_of("derive_model"),
    script:
        STAGE


rule corpus:
    input:
        corpus_file=CORPUS_FILE or [],
        # A local corpus.dataset's files, tracked for reruns (the stage reads them itself).
        local_data=local_dataset_files(config["corpus"].get("dataset")),
        # The evaluation rows of the same benchmark: the corpus refuses any of their ids.
        held_out=corpus_held_out,
        tokenizer=lambda wc: tracked_path(corpus_tokenizer(wc)),
    output:
        out_path=f"{RS}/corpus/train.jsonl",
        info_path=f"{RS}/corpus/info.json",
        skipped_path=f"{RS}/corpus/skipped.parquet",
    log:
        f"{RS}/logs/corpus.log",
    benchmark:
        f"{RS}/benchmarks/corpus.tsv"
    conda:
        ENV
    params:
        settings=settings_of("corpus"),
        tokenizer_dir=corpus_tokenizer,
    script:
        STAGE
