"""The monitored windows of the few-shot image family (TOW's Figures 4–5): meta-batches of pre-defined
tasks whose classes share one group (an Omniglot alphabet) or come from distinct groups."""
from __future__ import annotations

import pytest
import torch

from taskbal.data.fewshot_images import ClassPool, check_data, monitored_rows

# 6 groups ("alphabets") of 5 to 9 classes, 20 images per class
GROUPS = torch.cat([torch.full((5 + g % 4,), g) for g in range(6)])
POOL = ClassPool(torch.full((len(GROUPS),), 20), GROUPS)
MONITOR = {"windows": [], "batches": 3, "tasks": 4}


def groups_of(rows: torch.Tensor) -> torch.Tensor:
    """The group of every class of every episode [T·M, ways], from its image rows (20 rows per class)."""
    return GROUPS[rows[:, :, 0] // 20]


def test_same_and_different_windows_draw_their_groups_as_named():
    same = groups_of(monitored_rows(POOL, "same_train", MONITOR, 7, ways=5, per_class=2, one_group=True)).view(3, 4, 5)
    assert (same == same[:, :1, :1]).all()  # one group per meta-batch, every class of every task in it
    different = groups_of(monitored_rows(POOL, "different_train", MONITOR, 7, ways=5, per_class=2,
                                         one_group=True)).view(3, 4, 5)
    assert (different == different[:, :, :1]).all()  # each task within its own group ...
    assert all(len(set(batch[:, 0].tolist())) == 4 for batch in different)  # ... 4 distinct groups per meta-batch
    rows = monitored_rows(POOL, "any_test", MONITOR, 7, ways=5, per_class=2, one_group=False)
    assert rows.shape == (12, 5, 2)
    assert all(len(set(episode[:, 0].tolist())) == 5 for episode in rows)  # distinct classes per episode
    assert torch.equal(rows, monitored_rows(POOL, "any_test", MONITOR, 7, ways=5, per_class=2, one_group=False))


def test_too_few_groups_and_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="data.monitor.windows: 'different_train' needs 7 groups"):
        monitored_rows(POOL, "different_train", {**MONITOR, "tasks": 7}, 7, ways=5, per_class=2, one_group=True)
    base = {"dataset": "omniglot", "split_variant": "alphabet", "ways": 5, "shots": 1, "query": 15,
            "train_tasks": 10, "val_tasks": 2, "test_tasks": 2, "split_seed": 0}
    with pytest.raises(ValueError, match="data.monitor.windows: 'same_holdout' is not <classes>_<split>"):
        check_data({**base, "monitor": {"windows": ["same_holdout"], "batches": 5, "tasks": 5}})
    with pytest.raises(ValueError, match="data.monitor.batches: expected an integer >= 1"):
        check_data({**base, "monitor": {"windows": ["same_train"], "batches": 0, "tasks": 5}})
    with pytest.raises(ValueError, match="data.monitor: expected"):
        check_data({**base, "monitor": ["same_train"]})
