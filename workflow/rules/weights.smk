# Pretrained weights: `snakemake resources/weights/<file>` copies a weights file a run names
# (`mtl.weights`) from config `weights_dir` or PyTorch's hub cache, checked as torchvision checks it.
# Jobs never download weights; when no copy is found the job says which file and where to put it.
import os
import re
import shlex

from taskbal.weights import KNOWN, WEIGHTS_DIR


rule weights:
    """A pretrained weights file a training job loads (see taskbal/weights.py)."""
    output:
        f"{WEIGHTS_DIR}/{{name}}",
    log:
        "results/logs/weights/{name}.log",
    wildcard_constraints:
        name="|".join(re.escape(name) for name in KNOWN),
    localrule: True
    conda:
        "../../environment.yml"
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
        local=lambda w: f"--local {shlex.quote(str(config['weights_dir']))}" if config.get("weights_dir") else "",
    shell:
        "taskbal weights fetch {wildcards.name} --out-dir {params.out_dir} {params.local} 2>&1 | tee {log}"
