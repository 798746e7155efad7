rule split:
    """Draw every train/validation/test task of a task family once, into a file with its hash."""
    input:
        data=lambda w: split_inputs(w.scale, w.split),
    output:
        tasks=artifacts.SPLIT_FILE,
        meta=artifacts.SPLIT_SIDECAR,
    log:
        "results/logs/{scale}/split/{split}.log",
    conda:
        "../../environment.yml"
    params:
        data=lambda w: json.dumps(SPLITS[w.scale, w.split]),
    shell:
        "taskbal split --data {params.data:q} --out {output.tasks} > {log} 2>&1"
