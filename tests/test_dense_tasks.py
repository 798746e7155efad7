"""NYUv2's dense tasks (thesis Tables 3.4, 5.2): the metrics against computations written out pixel by
pixel, the dilated ResNet against torchvision's own dilation, the family against its .npy files, and a
NORMAL step on feature maps."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import fake_split_layouts as fake  # noqa: E402
from taskbal.data import nyuv2_tasks  # noqa: E402
from taskbal.data.datasets import build_splits  # noqa: E402
from taskbal.mtl.data import MultiTaskData  # noqa: E402
from taskbal.mtl.model import MultiTaskNet, dilate  # noqa: E402
from taskbal.mtl.normal import NORMAL, NormalNeck  # noqa: E402
from taskbal.mtl.objectives import objective  # noqa: E402
from taskbal.mtl.trainer import LearningRates, task_metrics  # noqa: E402
from taskbal.mtl.weighted import WeightedMTL  # noqa: E402


def metrics_in_chunks(kind, outputs, targets, classes=None, chunk=2):
    task = objective(kind, classes)
    state = task.start()
    for i in range(0, len(targets), chunk):
        task.accumulate(state, outputs[i:i + chunk], targets[i:i + chunk])
    return task.result(state)


def test_segmentation_metrics_pixel_by_pixel():
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.standard_normal((5, 4, 3, 6)), dtype=torch.float32)
    labels = torch.tensor(rng.integers(-1, 3, (5, 3, 6)))  # class 3 never in the labels
    result = metrics_in_chunks("segmentation", logits, labels, classes=4)
    predicted, truth = logits.argmax(1).numpy().ravel(), labels.numpy().ravel()
    keep = truth != -1
    predicted, truth = predicted[keep], truth[keep]
    ious = []
    for c in range(4):
        union = np.sum((predicted == c) | (truth == c))
        if union:
            ious.append(np.sum((predicted == c) & (truth == c)) / union)
    assert result["miou"] == pytest.approx(np.mean(ious))
    assert result["pixel_accuracy"] == pytest.approx(np.mean(predicted == truth))
    expected_loss = float(torch.nn.functional.cross_entropy(logits, labels, ignore_index=-1, reduction="sum")
                          / (labels != -1).sum())
    assert objective("segmentation", 4).loss(logits, labels) == pytest.approx(expected_loss, rel=1e-5)


def test_depth_and_normal_metrics_pixel_by_pixel():
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 3.0, (4, 1, 3, 5))
    depth[rng.random(depth.shape) < 0.2] = 0.0
    predicted = rng.uniform(0.5, 3.0, depth.shape)
    result = metrics_in_chunks("depth", torch.tensor(predicted), torch.tensor(depth))
    valid = depth != 0
    assert result["abs_err"] == pytest.approx(np.abs(predicted - depth)[valid].mean())
    assert result["rel_err"] == pytest.approx((np.abs(predicted - depth)[valid] / depth[valid]).mean())

    truth = rng.standard_normal((4, 3, 3, 5))
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    truth[:, :, 0, 0] = 0.0  # no normal at one pixel of every scene
    guess = rng.standard_normal(truth.shape)
    result = metrics_in_chunks("normals", torch.tensor(guess), torch.tensor(truth))
    angles = []
    for n, i, j in np.ndindex(4, 3, 5):
        if np.abs(truth[n, :, i, j]).sum() == 0:
            continue
        g = guess[n, :, i, j] / np.linalg.norm(guess[n, :, i, j])
        angles.append(math.degrees(math.acos(np.clip(g @ truth[n, :, i, j], -1, 1))))
    angles = np.array(angles)
    assert result["angle_mean"] == pytest.approx(angles.mean())
    assert result["angle_median"] == pytest.approx(float(torch.tensor(angles).median()))
    for t, key in ((11.25, "within_11_25"), (22.5, "within_22_5"), (30, "within_30")):
        assert result[key] == pytest.approx(np.mean(angles < t))
    loss = objective("normals").loss(torch.tensor(guess), torch.tensor(truth))
    assert float(loss) == pytest.approx(np.mean(1 - np.cos(np.radians(angles))), rel=1e-6)


def test_dilation_matches_torchvisions_on_resnet50():
    """Our dilation of layers 3 and 4 is torchvision's ``replace_stride_with_dilation`` on ResNet-50 (which
    torchvision cannot do for ResNet-18's BasicBlocks; ours can): same outputs, output stride 8."""
    from torchvision.models import resnet18, resnet50

    torch.manual_seed(0)
    reference = resnet50(weights=None, replace_stride_with_dilation=[False, True, True]).eval()
    ours = resnet50(weights=None)
    ours.load_state_dict(reference.state_dict())
    dilate(ours.layer3, 2)
    dilate(ours.layer4, 4)
    ours.eval()
    x = torch.randn(1, 3, 40, 48)
    trunk = lambda net: torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2,  # noqa: E731
                                            net.layer3, net.layer4)
    with torch.no_grad():
        expected, got = trunk(reference)(x), trunk(ours)(x)
    assert got.shape == (1, 2048, 5, 6)
    torch.testing.assert_close(got, expected)
    small = resnet18(weights=None)
    dilate(small.layer3, 2)
    dilate(small.layer4, 4)
    assert trunk(small.eval())(x).shape == (1, 512, 5, 6)


@pytest.fixture
def nyuv2(tmp_path):
    resources = tmp_path / "resources"
    fake.nyuv2_scenes(resources / "nyuv2/nyuv2")
    (resources / "nyuv2/.verified").write_text(json.dumps({"source": "generated for a test"}))
    build_splits("nyuv2", resources / "nyuv2", tmp_path / "splits/nyuv2/libmtl.json")
    data = {"family": "nyuv2_tasks", "resources": str(resources), "dataset_splits": str(tmp_path / "splits")}
    nyuv2_tasks.write_splits(tmp_path / "nyuv2.npz", data)
    return tmp_path / "nyuv2.npz", resources


def test_nyuv2_family_holds_the_scenes_files(nyuv2):
    path, resources = nyuv2
    tasks = nyuv2_tasks.Tasks(path)
    image, labels = tasks.arrays("test", "segmentation")
    assert image.shape == (3, 3, 16, 24) and labels.dtype == np.int64
    scene = resources / "nyuv2/nyuv2/val"
    np.testing.assert_allclose(image[2], np.load(scene / "image/2.npy").transpose(2, 0, 1), atol=1e-3)
    np.testing.assert_array_equal(labels[2], np.load(scene / "label/2.npy"))
    np.testing.assert_allclose(tasks.arrays("test", "normal")[1][2], np.load(scene / "normal/2.npy").transpose(2, 0, 1),
                               atol=1e-3)
    data = MultiTaskData(tasks)
    assert [o.kind for o in data.objectives] == ["segmentation", "depth", "normals"]
    assert data.num_classes == [13, 1, 3] and data.tensors["train"][1][1].dtype == torch.float32


@pytest.mark.parametrize("method", ["mean", "normal"])
def test_a_step_on_dense_tasks_and_their_evaluation(nyuv2, method):
    """EW and NORMAL (its ODE on the channels of the feature map) train and evaluate on the three dense tasks;
    NORMAL's manual position gradient (Eq. 5.11 summed over the map) moves each position."""
    path, _ = nyuv2
    data = MultiTaskData(nyuv2_tasks.Tasks(path))
    torch.manual_seed(0)
    neck = NormalNeck(512, 3, ode_hidden=16) if method == "normal" else None
    model = MultiTaskNet(0, [], data.num_classes, neck, encoder="resnet18_dilated", input_norm="none")
    if method == "normal":
        step = NORMAL(model, data, 0, position_lr=0.5, batch_size=2)
    else:
        step = WeightedMTL(model, data, 0, "mean", {}, batch_size=2)
    rates = LearningRates([step.optimizer], {"lr_decay_every": 1, "lr_decay": 0.5, "lr_plateau": None})
    rates.before_step(0)
    stats = step.step(0)
    rates.before_step(1)
    step.step(1)
    assert all(math.isfinite(stats[f"train_loss_{name}"]) for name in data.names)
    if method == "normal":
        assert not torch.equal(neck.positions.detach(), torch.ones(3))
    else:
        assert step.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5)  # decayed at iteration 1
    rows = task_metrics(model, data, "test", chunk=2)
    assert [row["task"] for row in rows] == ["segmentation", "depth", "normal"]
    assert 0 <= rows[0]["miou"] <= 1 and rows[1]["abs_err"] > 0 and 0 <= rows[2]["within_30"] <= 1


def test_dense_encoders_refuse_vector_settings():
    with pytest.raises(ValueError, match="mtl.hidden"):
        MultiTaskNet(0, [64], [13], encoder="resnet50_dilated")
    with pytest.raises(ValueError, match="mtl.head_hidden"):
        MultiTaskNet(0, [], [13], encoder="resnet18_dilated", head_hidden=[8])
    with pytest.raises(ValueError, match="mtl.input_norm"):
        MultiTaskNet(0, [], [13], encoder="resnet18_dilated", input_norm="cifar")


def test_the_plateau_schedule_lowers_the_rate_and_resumes():
    """lr_plateau: ReduceLROnPlateau on the selection score at every curve point; its state travels with the
    run's, so a resumed run lowers the rate where an uninterrupted one does."""
    def rates():
        optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        return optimizer, LearningRates([optimizer], {"lr_decay_every": 0, "lr_decay": 0.5,
                                                      "lr_plateau": {"factor": 0.7, "patience": 1, "min_lr": 5e-4}})
    optimizer, schedule = rates()
    for loss in (1.0, 0.9, 0.95):  # an improvement, then one bad point: within patience
        schedule.after_curve_point(loss)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    saved = schedule.state_dict()
    resumed_optimizer, resumed = rates()
    resumed.load_state_dict(saved)
    for opt, sched in ((optimizer, schedule), (resumed_optimizer, resumed)):
        sched.after_curve_point(0.95)  # the second bad point: times 0.7
        assert opt.param_groups[0]["lr"] == pytest.approx(7e-4)
        for _ in range(4):
            sched.after_curve_point(0.95)
        assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)  # min_lr


def test_schedule_settings_name_the_field():
    from taskbal.mtl.trainer import settings

    base = {"runner": "mtl", "data": {}, "mtl": {"iterations": 10, "select_on": "val"}}
    plateau = {"factor": 0.7, "patience": 5, "min_lr": 1e-5}
    with pytest.raises(ValueError, match="mtl.lr_plateau: one learning-rate schedule"):
        settings({**base, "mtl": {**base["mtl"], "lr_plateau": plateau, "lr_decay_every": 100}})
    with pytest.raises(ValueError, match="mtl.lr_plateau: follows the selection score"):
        settings({**base, "mtl": {"iterations": 10, "lr_plateau": plateau}})
    with pytest.raises(ValueError, match="mtl.lr_plateau"):
        settings({**base, "mtl": {**base["mtl"], "lr_plateau": {"factor": 0.7}}})
    with pytest.raises(ValueError, match="mtl.lr_decay_every"):
        settings({**base, "mtl": {**base["mtl"], "lr_decay_every": -1}})
    with pytest.raises(ValueError, match="mtl.lr_decay"):
        settings({**base, "mtl": {**base["mtl"], "lr_decay": 1.5}})
