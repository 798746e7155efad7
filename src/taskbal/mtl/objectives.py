"""What a multi-task task is trained and judged on: its loss and its metrics, one class per kind.

A family says each task's kind (``Tasks.objective(task) -> (kind, options)``; classification over its
classes when it does not). The head of a task has ``outputs`` channels; dense kinds predict a map the
size of the input (NYUv2's segmentation, depth and surface normals, thesis Tables 3.4 and 5.2, as LibMTL
computes them):

* ``classification``: cross-entropy; accuracy and macro-F1 in percent (as the thesis reports them).
* ``segmentation``: per-pixel cross-entropy ignoring label −1; mIoU (mean over the classes present in the
  labels or predictions of the split) and pixel accuracy over every labelled pixel, as fractions.
* ``depth``: L1 over the pixels with a depth; absolute error and relative error |d − d*| / d* averaged
  over those pixels.
* ``regression``: MSE on a normalised scalar target; MAE in the table's units (times ``scale``) and normalised.
* ``normals``: 1 − cosine similarity of the unit-normalised prediction over the pixels with a normal; the
  mean and median angle to the truth in degrees, and the fractions of pixels within 11.25°, 22.5°, 30°.

``metrics`` takes the outputs and targets of a whole split in chunks (``accumulate`` then ``result``), so a
split of full-resolution maps never needs to be held at once. Every metric dict also has ``loss``, the
mean of the chunks' losses weighted by their sizes.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

IGNORE = -1


def macro_f1(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Mean over the classes present in labels or predictions of 2TP / (2TP + FP + FN)."""
    scores = []
    for c in np.union1d(labels, predictions):
        tp = np.sum((predictions == c) & (labels == c))
        fp = np.sum((predictions == c) & (labels != c))
        fn = np.sum((predictions != c) & (labels == c))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


class Objective:
    """One task's loss and metrics."""

    kind = ""

    def __init__(self, outputs: int):
        self.outputs = int(outputs)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def start(self) -> dict:
        return {"loss": 0.0, "count": 0}

    def accumulate(self, state: dict, output: torch.Tensor, target: torch.Tensor) -> None:
        n = target.shape[0]
        state["loss"] += float(self.loss(output, target)) * n
        state["count"] += n

    def result(self, state: dict) -> dict[str, float]:
        return {"loss": state["loss"] / max(state["count"], 1)}


class Classification(Objective):
    kind = "classification"

    def loss(self, output, target):
        return F.cross_entropy(output, target)

    def start(self):
        return {**super().start(), "labels": [], "predictions": []}

    def accumulate(self, state, output, target):
        super().accumulate(state, output, target)
        state["labels"].append(target.cpu().numpy())
        state["predictions"].append(output.argmax(1).cpu().numpy())

    def result(self, state):
        labels, predictions = np.concatenate(state["labels"]), np.concatenate(state["predictions"])
        return {"accuracy": 100.0 * float(np.mean(labels == predictions)), "f1": 100.0 * macro_f1(labels, predictions),
                **super().result(state)}


class Segmentation(Objective):
    kind = "segmentation"

    def loss(self, output, target):
        return F.cross_entropy(output, target, ignore_index=IGNORE)

    def start(self):
        return {**super().start(), "confusion": torch.zeros(self.outputs, self.outputs, dtype=torch.int64)}

    def accumulate(self, state, output, target):
        super().accumulate(state, output, target)
        keep = target != IGNORE
        pairs = target[keep] * self.outputs + output.argmax(1)[keep]
        state["confusion"] += torch.bincount(pairs, minlength=self.outputs ** 2).view(self.outputs, -1).cpu()

    def result(self, state):
        confusion = state["confusion"].double()
        true_positive = confusion.diag()
        union = confusion.sum(0) + confusion.sum(1) - true_positive
        present = union > 0
        return {"miou": float((true_positive[present] / union[present]).mean()),
                "pixel_accuracy": float(true_positive.sum() / confusion.sum()), **super().result(state)}


class Depth(Objective):
    kind = "depth"

    @staticmethod
    def valid(target):
        return target.sum(1, keepdim=True) != 0

    def loss(self, output, target):
        mask = self.valid(target).expand_as(target)
        return (output - target).abs()[mask].mean()

    def start(self):
        return {**super().start(), "abs": 0.0, "rel": 0.0, "pixels": 0}

    def accumulate(self, state, output, target):
        super().accumulate(state, output, target)
        mask = self.valid(target).expand_as(target)
        error = (output - target).abs()[mask]
        state["abs"] += float(error.sum())
        state["rel"] += float((error / target[mask]).sum())
        state["pixels"] += int(mask.sum())

    def result(self, state):
        pixels = max(state["pixels"], 1)
        return {"abs_err": state["abs"] / pixels, "rel_err": state["rel"] / pixels, **super().result(state)}


class Normals(Objective):
    kind = "normals"

    @staticmethod
    def valid(target):
        return target.abs().sum(1) != 0

    def loss(self, output, target):
        cosine = (F.normalize(output, dim=1) * target).sum(1)
        return 1.0 - cosine[self.valid(target)].mean()

    def start(self):
        return {**super().start(), "angles": []}

    def accumulate(self, state, output, target):
        super().accumulate(state, output, target)
        cosine = (F.normalize(output, dim=1) * target).sum(1)[self.valid(target)].clamp(-1.0, 1.0)
        state["angles"].append(torch.rad2deg(torch.acos(cosine)).cpu().double())

    def result(self, state):
        angles = torch.cat(state["angles"])
        within = {f"within_{str(t).replace('.', '_')}": float((angles < t).double().mean()) for t in (11.25, 22.5, 30)}
        return {"angle_mean": float(angles.mean()), "angle_median": float(angles.median()), **within,
                **super().result(state)}


class Regression(Objective):
    """A scalar target, normalised by the family; MAE in the table's units is the normalised error times
    ``scale`` (QM9: the target's standard deviation, times 1,000 for meV)."""

    kind = "regression"

    def __init__(self, outputs: int = 1, scale: float = 1.0):
        super().__init__(outputs)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"regression scale must be a positive number, got {scale!r}")
        self.scale = float(scale)

    def loss(self, output, target):
        return F.mse_loss(output.squeeze(-1), target)

    def start(self):
        return {**super().start(), "abs": 0.0}

    def accumulate(self, state, output, target):
        super().accumulate(state, output, target)
        state["abs"] += float((output.squeeze(-1) - target).abs().sum())

    def result(self, state):
        normalised = state["abs"] / max(state["count"], 1)
        return {"mae": normalised * self.scale, "normalised_mae": normalised, **super().result(state)}


KINDS = {"classification": Classification, "segmentation": Segmentation, "depth": Depth, "normals": Normals,
         "regression": Regression}
OUTPUTS = {"depth": 1, "normals": 3, "regression": 1}  # channels of the regressions; classes for the others


def objective(kind: str, classes: int | None = None, **options) -> Objective:
    """The objective of a task of ``kind`` (``classes`` for classification and segmentation; ``scale`` for
    regression)."""
    if kind not in KINDS:
        raise ValueError(f"task kind {kind!r} unknown; known: {sorted(KINDS)}")
    outputs = OUTPUTS.get(kind, classes)
    if outputs is None or outputs < 1 or (isinstance(outputs, float) and not math.isfinite(outputs)):
        raise ValueError(f"task kind {kind!r} needs its number of classes")
    return KINDS[kind](outputs, **options)
