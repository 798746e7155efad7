# Splits of the real datasets: `snakemake splits_<name>` (e.g. splits_mini_imagenet) writes every
# variant of that dataset's split file, results/dataset_splits/<name>/<variant>.json — the exact
# classes / images / molecules of train, val and test under the paper's protocol, fixed evaluation
# episodes where the paper evaluates on sampled tasks, and the file's SHA-256 inside it. One variant:
# `snakemake results/dataset_splits/omniglot/alphabet.json`. Needs the dataset (rule data_<name>).
# Variants and their builder options: SPLIT_VARIANTS of the dataset's module in taskbal/data/datasets/;
# config `dataset_splits: {<name>: {<variant>: {<option>: <value>}}}` adds or replaces variants.
from taskbal.data.datasets import split_options_json, split_variants, splittable


rule dataset_split:
    """One split file of a real dataset under a paper's protocol (see its module in taskbal.data.datasets)."""
    input:
        "resources/{name}/.verified",
    output:
        "results/dataset_splits/{name}/{variant}.json",
    log:
        "results/logs/dataset_splits/{name}/{variant}.log",
    wildcard_constraints:
        name="|".join(splittable()),
        variant="[A-Za-z0-9_]+",
    localrule: True
    conda:
        "../../environment.yml"
    params:
        options=lambda w: split_options_json(w.name, w.variant, config),
    shell:
        "taskbal data split {wildcards.name} --root resources --out {output} --options {params.options:q} "
        "> {log} 2>&1"


for _name in splittable():

    rule:
        name:
            f"splits_{_name}"
        input:
            [f"results/dataset_splits/{_name}/{v}.json" for v in split_variants(_name, config)],
        localrule: True


# Datasets whose splits belong to a task family (MNIST, Fashion-MNIST: DA-MAML's binary tasks and the
# thesis' hyper-cleaning draw their exact images per table): `splits_<name>` builds every table split
# file, at the configured scale, that reads the dataset.
for _name in sorted(set(DATASETS) - set(splittable())):

    rule:
        name:
            f"splits_{_name}"
        input:
            sorted(
                f"results/splits/{_scale}/{_split}.npz"
                for (_scale, _split) in SPLITS
                if _scale == config["scale"] and dataset_flag(_name) in split_inputs(_scale, _split)
            ),
        localrule: True
