"""The sinusoid split file: deterministic, in range, hash-checked."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from taskbal.data.sinusoid import SinusoidTasks, write_splits
from taskbal.io import read_json, sidecar


def test_same_seed_same_file_other_seed_other_file(tmp_path):
    a = write_splits(tmp_path / "a.npz",
                     dict(shots=2, query=2, train_tasks=100, val_tasks=10, test_tasks=10, split_seed=1))
    b = write_splits(tmp_path / "b.npz",
                     dict(shots=2, query=2, train_tasks=100, val_tasks=10, test_tasks=10, split_seed=1))
    c = write_splits(tmp_path / "c.npz",
                     dict(shots=2, query=2, train_tasks=100, val_tasks=10, test_tasks=10, split_seed=2))
    assert a["sha256"] == b["sha256"] != c["sha256"]


def test_test_tasks_do_not_depend_on_the_training_pool_size(tmp_path):
    write_splits(tmp_path / "a.npz", dict(shots=5, query=5, train_tasks=100, val_tasks=10, test_tasks=30, split_seed=3))
    write_splits(tmp_path / "b.npz", dict(shots=5, query=5, train_tasks=500, val_tasks=10, test_tasks=30, split_seed=3))
    a, b = SinusoidTasks(tmp_path / "a.npz"), SinusoidTasks(tmp_path / "b.npz")
    torch.testing.assert_close(a.batch("test").query_y, b.batch("test").query_y)


def test_task_parameters_and_targets(small_split):
    tasks = SinusoidTasks(small_split)
    table = tasks.task_table("train")
    assert table["amplitude"].min() >= 0.1 and table["amplitude"].max() <= 5.0
    assert table["phase"].min() >= 0 and table["phase"].max() <= np.pi
    batch = tasks.batch("train", torch.tensor([3, 17]))
    assert batch.support_x.shape == (2, 5, 1) and batch.query_x.shape == (2, 5, 1)
    assert batch.support_x.abs().max() <= 5.0
    a, b = table["amplitude"][17], table["phase"][17]
    expected = a * np.sin(batch.query_x[1, :, 0].numpy() + b)  # the paper's y = a sin(x + b)
    np.testing.assert_allclose(batch.query_y[1, :, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert batch.features.shape == (2, 10)
    assert tasks.num_tasks("train") == 320 and tasks.num_tasks("test") == 40


def test_corrupted_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "s.npz"
    write_splits(path, dict(shots=2, query=2, train_tasks=10, val_tasks=2, test_tasks=2, split_seed=0))
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="s.npz.*SHA-256"):
        SinusoidTasks(path)


def test_missing_file_says_to_run_the_split_rule(tmp_path):
    with pytest.raises(FileNotFoundError, match="split rule"):
        SinusoidTasks(tmp_path / "none.npz")


def test_sidecar_records_seed_and_sizes(small_split):
    meta = read_json(sidecar(small_split))
    assert meta["seed"] == 7 and meta["sizes"] == {"train": 320, "val": 20, "test": 40}
    assert not list(small_split.parent.glob("*.tmp"))
