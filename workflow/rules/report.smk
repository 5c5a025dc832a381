# The report: the paper-layout accuracy table, detection quality against planted labels (with the
# percentile sweep from rule inspect), a plot.


rule report:
    input:
        scores=expand("{R}/eval/{model}/{benchmark}.scores.json", R=R, model=MODELS, benchmark=BENCHMARKS),
        metrics_path=f"{R}/detection/metrics.json",
        sweep_path=f"{R}/detection/sweep.csv",
        attention=expand("{R}/attention/{model}.csv", R=R, model=MODELS),
    output:
        summary=f"{R}/report/summary.md",
        table=f"{R}/report/summary.csv",
        plot=f"{R}/report/accuracy.png",
        attention_plot=f"{R}/report/attention.png",
    params:
        settings=tracked(config),
        out_dir=lambda wc, output: os.path.dirname(output.summary),
    log:
        f"{R}/logs/report.log",
    conda:
        ENV
    script:
        STAGE
