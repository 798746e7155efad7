# Reproduction pipeline: splits → train (method × setting × seed) → evaluate → tables.
# `snakemake` builds config["tables"] at config["scale"]; any table at any scale can be asked
# for by path, e.g. `snakemake results/tables/paper/simol_table1.md`.
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

# The workflow reads its configs with the project's own code (also when not pip-installed).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/dataset_splits.smk"
include: "workflow/rules/splits.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/grids.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"


onstart:
    start_job_server()


onsuccess:
    stop_job_server()


onerror:
    stop_job_server()


rule all:
    default_target: True
    input:
        default_targets(),
