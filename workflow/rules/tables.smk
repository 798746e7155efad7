localrules:
    table,
    figure,
    reproduction_report,
    report,


rule table:
    """A paper table: our values next to the paper's, with a verdict per cell (md, csv, tex)."""
    input:
        config="config/tables/{table}.yaml",
        per_task=lambda w: run_files(w.table, w.scale, artifacts.EVAL),
        trained=lambda w: run_files(w.table, w.scale, artifacts.TRAIN_SUMMARY),
        curves=lambda w: stall_curves(w.table, w.scale),
        splits=lambda w: split_sidecars(w.table, w.scale),
        selections=lambda w: table_selections(w.table, w.scale),
    output:
        markdown="results/tables/{scale}/{table}.md",
        csv="results/tables/{scale}/{table}.csv",
        latex="results/tables/{scale}/{table}.tex",
        record="results/tables/{scale}/{table}.json",
    log:
        "results/logs/{scale}/table/{table}.log",
    conda:
        "../../environment.yml"
    shell:
        "taskbal table --config {input.config} --scale {wildcards.scale}"
        " --eval {input.per_task} --train-summaries {input.trained} --curves {input.curves}"
        " --splits {input.splits} --selections {input.selections}"
        " --out results/tables/{wildcards.scale}/{wildcards.table} > {log} 2>&1"


rule figure:
    """A paper figure drawn from the curves of its runs, with a page checking the paper's claims."""
    input:
        config="config/tables/{figure}.yaml",
        curves=lambda w: run_files(w.figure, w.scale, artifacts.CURVE),
        per_task=lambda w: run_files(w.figure, w.scale, artifacts.EVAL),
        finals=lambda w: run_files(w.figure, w.scale, artifacts.EVAL_SUMMARY),
        trained=lambda w: run_files(w.figure, w.scale, artifacts.TRAIN_SUMMARY),
        splits=lambda w: split_sidecars(w.figure, w.scale),
        selections=lambda w: table_selections(w.figure, w.scale),
    output:
        png="results/figures/{scale}/{figure}.png",
        page="results/figures/{scale}/{figure}.md",
        record="results/figures/{scale}/{figure}.json",
    log:
        "results/logs/{scale}/figure/{figure}.log",
    conda:
        "../../environment.yml"
    shell:
        "taskbal table --config {input.config} --scale {wildcards.scale}"
        " --curves {input.curves} --eval {input.per_task} --eval-summaries {input.finals}"
        " --train-summaries {input.trained}"
        " --splits {input.splits} --selections {input.selections}"
        " --out results/figures/{wildcards.scale}/{wildcards.figure} > {log} 2>&1"


rule reproduction_report:
    """One self-contained HTML page: every table and figure of config["tables"] at a scale, by paper,
    and what is not built and why (config/papers.yaml lists every table and figure of the papers)."""
    input:
        papers="config/papers.yaml",
        records=lambda w: [record_path(name, w.scale) for name in tables_at(w.scale)],
        figures=lambda w: [target_of(name, w.scale) for name in tables_at(w.scale) if name in FIGURE_NAMES],
    output:
        "results/report/{scale}.html",
    log:
        "results/logs/{scale}/report.log",
    conda:
        "../../environment.yml"
    shell:
        "taskbal report --papers {input.papers} --records {input.records} --figures {input.figures}"
        " --scale {wildcards.scale} --out {output} > {log} 2>&1"


rule report:
    """`snakemake report`: the reproduction report at the configured scale."""
    input:
        f"results/report/{config['scale']}.html",


# One rule per table or figure, named after its config, so that `snakemake nash_table2` builds it
# at the configured scale (`--config scale=paper` for the published settings).
for _name in TABLES:

    rule:
        name:
            _name
        default_target: False
        input:
            target_of(_name, config["scale"]),
        localrule: True
