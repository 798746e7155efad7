# Datasets: one rule per dataset, `snakemake data_<name>` (e.g. data_fashion_mnist), each producing
# resources/<name>/.verified once every file is downloaded (or taken from a local copy / offline
# source), checked against its checksum and unpacked. Not part of the default target.
# A local copy: config `datasets: {<name>: {local: <directory or archive>}}`.
import os
import shlex

from taskbal.data.datasets import DATASETS

DATA_ROOT = "resources"


def dataset_local(name):
    return ((config.get("datasets") or {}).get(name) or {}).get("local") or ""


def dataset_flag(name):
    return f"{DATA_ROOT}/{name}/.verified"


for _dataset in DATASETS:

    rule:
        name:
            f"data_{_dataset}"
        output:
            dataset_flag(_dataset),
        log:
            f"results/logs/data/{_dataset}.log",
        localrule: True
        conda:
            "../../environment.yml"
        params:
            name=_dataset,
            root=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),
            local=(lambda wildcards, n=_dataset: f"--local {shlex.quote(dataset_local(n))}" if dataset_local(n) else ""),
        shell:
            "taskbal data fetch {params.name} --root {params.root} {params.local} --no-progress 2>&1 | tee {log}"
