"""CelebA image completion as few-shot regression (Nash-GBML Table 3): the tasks' pixels against the
images, fresh support pixels for a face seen again, fixed evaluation tasks, and a tiny build of the table."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import fake_split_layouts as fake  # noqa: E402
from taskbal.data import celeba_completion  # noqa: E402
from taskbal.data.datasets import build_splits  # noqa: E402
from taskbal.data.split_building import decode_image  # noqa: E402
from workspaces import build_tiny, edit_table, mark_generated, tiny_workspace  # noqa: E402


@pytest.fixture
def completion(tmp_path):
    resources = tmp_path / "resources"
    fake.celeba_tree(resources / "celeba")
    (resources / "celeba/.verified").write_text(json.dumps({"source": "generated for a test"}))
    build_splits("celeba", resources / "celeba", tmp_path / "splits/celeba/official.json")
    data = {"family": "celeba_completion", "image_size": 6, "shots": 5, "train_tasks": 30, "val_tasks": 2,
            "test_tasks": 3, "split_seed": 7, "resources": str(resources), "dataset_splits": str(tmp_path / "splits")}
    path = tmp_path / "completion.npz"
    celeba_completion.write_splits(path, data)
    return path, data, tmp_path


def test_a_task_is_one_face_mapped_from_pixel_coordinates_to_colours(completion):
    path, _, root = completion
    tasks = celeba_completion.Tasks(path)
    split_file = json.loads((root / "splits/celeba/official.json").read_text())
    image = decode_image(root / "resources/celeba/celeba/img_align_celeba" / split_file["splits"]["test"]["images"][1],
                         6, 3)
    batch = tasks.batch("test", torch.tensor([1]))
    assert batch.query_x.shape == (1, 36, 2) and batch.query_y.shape == (1, 36, 3)  # every pixel
    for (row, column), colour in zip((batch.query_x[0] * 6).round().long().tolist(), batch.query_y[0]):
        np.testing.assert_allclose(colour.numpy(), image[:, row, column] / 255.0, rtol=1e-6)
    support = (batch.support_x[0] * 6).round().long()
    assert len({tuple(p) for p in support.tolist()}) == 5  # distinct pixels
    for (row, column), colour in zip(support.tolist(), batch.support_y[0]):
        np.testing.assert_allclose(colour.numpy(), image[:, row, column] / 255.0, rtol=1e-6)
    again = tasks.batch("test", torch.tensor([1]))
    assert torch.equal(again.support_x, batch.support_x)  # evaluation tasks are fixed


def test_training_faces_come_back_with_other_support_pixels(completion):
    path, _, _ = completion
    tasks = celeba_completion.Tasks(path)
    n = tasks.arrays["train_images"].shape[0]
    first, revisit = tasks.batch("train", torch.tensor([2])), tasks.batch("train", torch.tensor([2 + n]))
    assert torch.equal(first.query_y, revisit.query_y)  # the same face
    assert not torch.equal(first.support_x, revisit.support_x)  # other pixels
    assert torch.equal(tasks.batch("train", torch.tensor([2])).support_x, first.support_x)  # deterministic
    assert tasks.num_tasks("train") == 30 and tasks.io_dims == (2, 3)


def test_bad_settings_name_the_field(completion):
    _, data, _ = completion
    with pytest.raises(ValueError, match="data.shots"):
        celeba_completion.check_data({**data, "shots": 36})
    with pytest.raises(ValueError, match="data.query"):
        celeba_completion.check_data({**data, "query": 32})
    with pytest.raises(ValueError, match="data.test_tasks"):
        celeba_completion.write_splits(Path(data["resources"]) / "x.npz", {**data, "test_tasks": 50})


@pytest.mark.slow
def test_tiny_nash_table3(repo, tool_env, tmp_path):
    tiny_workspace(repo, tmp_path)
    edit_table(tmp_path, "nash_table3", rows=["MAML", "MAML + p_R(0.0001, 1)", "CAVIA"])
    fake.celeba_tree(tmp_path / "resources/celeba")
    mark_generated(tmp_path / "resources/celeba")
    build_tiny(tmp_path, tool_env, "nash_table3")
    table = pd.read_csv(tmp_path / "results/tables/tiny/nash_table3.csv").set_index(["row", "column"])
    for row in ("MAML", "MAML + p_R(0.0001, 1)", "CAVIA"):
        assert table.loc[(row, "mean"), "n"] == 4 and table.loc[(row, "worst"), "ours_mean"] >= \
            table.loc[(row, "mean"), "ours_mean"]
    evaluated = pd.read_csv(next((tmp_path / "results/runs/tiny").glob("celeba_completion-mean-*/seed0/eval.csv")))
    assert list(evaluated["image"]) == [0, 1, 2, 3]
    assert "generated for a test" in (tmp_path / "results/tables/tiny/nash_table3.md").read_text()
