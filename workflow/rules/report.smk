# The report, pooled over the seeds' replicates: the paper-layout accuracy table (mean ± sd across
# seeds, and each seed's own), paired comparisons with KD, detection quality against planted labels
# (with the percentile sweep from rule inspect), plots, and the run's record (validated config,
# software versions, wall time and GPU-hours per rule). `snakemake --report report.html` shows
# them with the captions in workflow/report/ (workflow.rst: its front page).


from leafpipe.report.run_record import benchmark_jobs


report: "../report/workflow.rst"


rule report:
    input:
        # graded: per-problem correctness for the paired tests, in the order of scores
        scores=seed_major(
            f"{RS}/eval/{{model}}/{{benchmark}}.scores.json", model=MODELS, benchmark=BENCHMARKS
        ),
        graded=seed_major(
            f"{RS}/eval/{{model}}/{{benchmark}}.graded.jsonl", model=MODELS, benchmark=BENCHMARKS
        ),
        metrics=seed_major(f"{RS}/detection/metrics.json"),
        sweeps=seed_major(f"{RS}/detection/sweep.csv"),
        detection_tables=seed_major(f"{RS}/detection/{{name}}.csv", name=["variants", "by_kind"]),
        validity=seed_major(f"{RS}/counterfactuals/{{level}}.validity.json", level=LEVELS),
        attention=seed_major(f"{RS}/attention/{{model}}.csv", model=MODELS),
        corpus_files=seed_major(
            f"{RS}/corpus/{{name}}", name=["info.json", "train.jsonl", "skipped.parquet"]
        ),
        benchmark_files=seed_major(
            f"{RS}/eval_data/{{benchmark}}.{{kind}}",
            benchmark=BENCHMARKS,
            kind=["info.json", "jsonl"],
        ),
    output:
        summary=report(
            f"{R}/report/summary.md",
            caption="../report/summary.rst",
            category="Accuracy",
            labels={"result": "summary (Markdown)"},
        ),
        table=report(
            f"{R}/report/summary.csv",
            caption="../report/summary_table.rst",
            category="Accuracy",
            labels={"result": "table (CSV)"},
        ),
        table_parquet=f"{R}/report/summary.parquet",  # not in the HTML report: it would show the bytes as text
        # The same scores shaped as lm-evaluation-harness's results (leafpipe.report.lm_eval_results).
        lm_eval_results=f"{R}/report/results.json",
        per_seed=report(
            f"{R}/report/per_seed.csv",
            caption="../report/per_seed.rst",
            category="Accuracy",
            labels={"result": "per seed (CSV)"},
        ),
        paired=report(
            f"{R}/report/paired.csv",
            caption="../report/paired.rst",
            category="Accuracy",
            labels={"result": "paired comparisons (CSV)"},
        ),
        plot=report(
            f"{R}/report/accuracy.png",
            caption="../report/accuracy.rst",
            category="Accuracy",
            labels={"result": "plot"},
        ),
        attention_plot=report(
            f"{R}/report/attention.png",
            caption="../report/attention.rst",
            category="Attention",
            labels={"result": "plot"},
        ),
        run_config=report(
            f"{R}/report/config.yaml",
            caption="../report/config.rst",
            category="Run record",
            labels={"result": "validated config"},
        ),
        versions=report(
            f"{R}/report/versions.json",
            caption="../report/versions.rst",
            category="Run record",
            labels={"result": "software versions"},
        ),
        timings=report(
            f"{R}/report/timings.csv",
            caption="../report/timings.rst",
            category="Run record",
            labels={"result": "wall time and GPU-hours per rule"},
        ),
    log:
        f"{R}/logs/report.log",
    conda:
        ENV
    params:
        settings=settings_of("report"),
        out_dir=lambda wc, output: os.path.dirname(output.summary),
        # The benchmark files (and GPU counts) of the jobs making every product, as a param, not an
        # input: Snakemake counts a benchmark file as its job's output, so a missing one (the job ran
        # before its rule had `benchmark:`, or the file was deleted) would rerun that job and
        # everything after it just to time it; the report marks the job untimed instead. Every
        # benchmarked job is upstream of the report, so its file is written before the report runs.
        timed_jobs=lambda wc: benchmark_jobs(
            workflow.rules,
            every_product(),
            lambda rule: job_resources(rule) if rule in WORLD_RESOURCES else {},
        ),
        repo=workflow.basedir,
        # Inside the variants' model folders, which are the tracked outputs (and upstream of the scores).
        training=seed_major(f"{RS}/models/{{variant}}/training.json", variant=VARIANTS),
    script:
        STAGE
