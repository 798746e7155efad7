localrules:
    select,
    grid_page,


rule select:
    """A grid search's selection: the point whose search runs end with the best validation value."""
    input:
        grid=lambda w: f"config/grids/{SELECTIONS[w.scale, w.selection]['grid']}.yaml",
        curves=lambda w: search_files(w.scale, w.selection, artifacts.CURVE),
        trained=lambda w: search_files(w.scale, w.selection, artifacts.TRAIN_SUMMARY),
    output:
        selection=artifacts.SELECTION_FILE,
    log:
        "results/logs/{scale}/select/{selection}.log",
    conda:
        "../../environment.yml"
    params:
        base=lambda w: json.dumps(SELECTIONS[w.scale, w.selection]["base"]),
    shell:
        "taskbal select --grid {input.grid} --scale {wildcards.scale} --base {params.base:q}"
        " --curves {input.curves} --train-summaries {input.trained} --out {output.selection} > {log} 2>&1"


rule grid_page:
    """A grid search's page: per setting, the chosen point, the cells it serves and every point's value."""
    input:
        grid="config/grids/{grid}.yaml",
        selections=lambda w: [artifacts.selection_file(w.scale, name) for name in grid_selections(w.grid, w.scale)],
        curves=lambda w: grid_stall_files(w.grid, w.scale, artifacts.CURVE),
        trained=lambda w: grid_stall_files(w.grid, w.scale, artifacts.TRAIN_SUMMARY),
    output:
        page=f"{artifacts.GRID_PAGE}.md",
        csv=f"{artifacts.GRID_PAGE}.csv",
    log:
        "results/logs/{scale}/grid/{grid}.log",
    conda:
        "../../environment.yml"
    params:
        used_by=lambda w: json.dumps(cells_using(w.grid, w.scale)),
    shell:
        "taskbal grid --grid {input.grid} --scale {wildcards.scale} --selections {input.selections}"
        " --used-by {params.used_by:q} --curves {input.curves} --train-summaries {input.trained}"
        " --out results/grids/{wildcards.scale}/{wildcards.grid} > {log} 2>&1"


# One rule per grid search, named after its config, so that `snakemake simol_appendix_d` runs it at the
# configured scale (the tables that use a grid run it anyway: their grid-searched rows need its selection).
for _name in GRIDS:

    rule:
        name:
            _name
        default_target: False
        input:
            f"results/grids/{config['scale']}/{_name}.md",
        localrule: True
