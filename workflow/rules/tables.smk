localrules:
    table,
    figure,


rule table:
    """A paper table: our values next to the paper's, with a verdict per cell (md, csv, tex)."""
    input:
        config="config/tables/{table}.yaml",
        per_task=lambda w: cell_files(w.table, w.scale, "eval.csv"),
    output:
        markdown="results/tables/{scale}/{table}.md",
        csv="results/tables/{scale}/{table}.csv",
        latex="results/tables/{scale}/{table}.tex",
    log:
        "results/logs/{scale}/table/{table}.log",
    conda:
        "../../environment.yml"
    shell:
        "taskbal table --table {wildcards.table} --scale {wildcards.scale}"
        " --runs-root results/runs/{wildcards.scale} --out results/tables/{wildcards.scale}/{wildcards.table}"
        " > {log} 2>&1"


rule figure:
    """A paper figure drawn from the training curves of its runs."""
    input:
        config="config/tables/{figure}.yaml",
        curves=lambda w: cell_files(w.figure, w.scale, "curve.csv"),
    output:
        png="results/figures/{scale}/{figure}.png",
    log:
        "results/logs/{scale}/figure/{figure}.log",
    conda:
        "../../environment.yml"
    shell:
        "taskbal table --table {wildcards.figure} --scale {wildcards.scale}"
        " --runs-root results/runs/{wildcards.scale} --out results/figures/{wildcards.scale}/{wildcards.figure}"
        " > {log} 2>&1"
