# Datasets: one rule per dataset, `snakemake data_<name>` (e.g. data_fashion_mnist), each producing
# resources/<name>/.verified once every file is downloaded (or taken from a local copy / offline
# source), checked against its checksum and unpacked. Not part of the default target.
# A local copy: config `datasets: {<name>: {local: <directory or archive>}}`. Offline copies: config
# `offline_data: <folder>` (relative to the project root), a folder of <name>/ copies, handed to the
# datasets that have one (Omniglot), which take it when the download fails.
import os
import shlex

from taskbal.data.datasets import DATASETS, uses_offline_root

DATA_ROOT = "resources"


def dataset_local(name):
    return ((config.get("datasets") or {}).get(name) or {}).get("local") or ""


def dataset_sources(name):
    """The --local and --offline-root options of `taskbal data fetch <name>` the config asks for."""
    flags = []
    if dataset_local(name):
        flags.append(f"--local {shlex.quote(dataset_local(name))}")
    if config.get("offline_data") and uses_offline_root(name):
        flags.append(f"--offline-root {shlex.quote(str(config['offline_data']))}")
    return " ".join(flags)


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
            sources=lambda wildcards, n=_dataset: dataset_sources(n),
        shell:
            "taskbal data fetch {params.name} --root {params.root} {params.sources} --no-progress 2>&1 | tee {log}"
