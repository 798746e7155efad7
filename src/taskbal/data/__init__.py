"""Task families and datasets: each family writes its splits to a file and reads them back.

A family is imported on first use (``family_module``), so that reading one family, or parsing the
workflow, does not import every family's dependencies (torch among them).
"""
from __future__ import annotations

import importlib
from types import ModuleType

FAMILIES: dict[str, str | ModuleType] = {
    "sinusoid": "taskbal.data.sinusoid",                # SIMOL Table 1: uniform amplitude and phase
    "skewed_sinusoid": "taskbal.data.skewed_sinusoid",  # TR-MAML / Nash-GBML: skewed amplitude bins
    "simol_toy": "taskbal.data.simol_toy",              # SIMOL Figure 1: the two-objective toy
    "moblo_synthetic": "taskbal.data.moblo_synthetic",  # thesis App. A.1.4: the synthetic MOBLO problem
    "blackbox_moo": "taskbal.data.blackbox_moo",        # thesis Ch. 4: synthetic black-box problems
    "binary_mnist": "taskbal.data.binary_mnist",        # DA-MAML Figure 1: eight binary MNIST / Fashion-MNIST tasks
    "hyper_cleaning": "taskbal.data.hyper_cleaning",    # thesis Table 3.2: data hyper-cleaning
    "image_domains": "taskbal.data.image_domains",      # thesis Tables 3.3, 5.1, 5.4: Office domains as tasks
    "celeba_attributes": "taskbal.data.celeba_attributes",  # thesis Table 5.3: CelebA's 40 attributes as tasks
    "celeba_completion": "taskbal.data.celeba_completion",  # Nash-GBML Table 3: CelebA image completion
    "nyuv2_tasks": "taskbal.data.nyuv2_tasks",          # thesis Tables 3.4, 5.2: NYUv2's three dense tasks
    "qm9_tasks": "taskbal.data.qm9_tasks",              # thesis Table 3.5: QM9's 11 properties as tasks
    "fewshot_blobs": "taskbal.data.fewshot_blobs",      # generated N-way K-shot classification (tests, ProtoNet)
    "fewshot_images": "taskbal.data.fewshot_images",    # TOW, SIMOL, Nash-GBML: N-way K-shot on real image datasets
    "generated_images": "taskbal.data.generated_images",  # SIMOL Table 4: tasks of generated images, for timing
    "direction_locomotion": "taskbal.data.direction_locomotion",  # SIMOL Figure 3: MuJoCo run-in-a-direction
}


def family_module(name: str) -> ModuleType:
    """The module of a task family (a key of FAMILIES; a value may also be a module, as tests register)."""
    if name not in FAMILIES:
        raise ValueError(f"data.family: unknown task family {name!r}; known: {sorted(FAMILIES)}")
    family = FAMILIES[name]
    return importlib.import_module(family) if isinstance(family, str) else family
