"""Multi-task data for the MTL loop: per-task tensors of a family, and deterministic mini-batches.

The MTL family contract (what ``runners/mtl.py`` reads from ``data.family``'s ``Tasks(path)``):

    task_names                 sequence of the m task names (eval.csv's ``task`` column)
    splits                     the split names it holds; must include "train" and "test";
                               "val" is the UL data of the bi-level methods and the curves' split;
                               any other name (e.g. "val2", hyper-cleaning's second validation set
                               that selects the model) can be named by ``mtl.select_on``
    arrays(split, task)        (x, y): inputs [n, ...] (float, or uint8 images the model scales) and
                               integer class labels [n]
                               (numpy arrays or tensors); for hyper-cleaning the "train" labels are
                               the corrupted ones the per-sample weights must learn to discount
    num_classes(task)          optional: classes of the task (else max label + 1 over the splits)
    objective(task)            optional: {kind, classes or scale} of taskbal/mtl/objectives.py
                               (default: classification); dense kinds have maps as targets (float targets stay
                               float32, integer ones become int64)
    shared_inputs              optional, True: every task reads the same inputs (CelebA's attributes,
                               "single-input" MTL); arrays(split, task) returns the same x for every
                               task, held once in memory, and a mini-batch is the same samples for all
    corrupted(task)            optional: bool [n_train], which training labels were corrupted
                               (hyper-cleaning diagnostics only; never used for training)

Mini-batches: batch k of a task in a named ``stream`` (the single-level training stream, the LL
and UL streams of a bi-level method) is slice k mod B of a permutation drawn from
(seed, stream, task, epoch = k div B) (with shared inputs, the same permutation for every task),
B = batches per epoch — every sample is seen once per epoch,
and the batch depends only on (seed, iteration), so a resumed run sees the same data.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from .objectives import Objective, objective

STREAMS = ("train", "lower", "upper")


@dataclass
class TaskBatch:
    x: torch.Tensor
    y: torch.Tensor
    indices: torch.Tensor  # positions of the samples in their task's split


def _tensor(array, dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array).to(dtype)


def _targets(array) -> torch.Tensor:
    """Integer targets (labels) as int64, real ones (depths, normals) as float32."""
    tensor = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
    return tensor.to(torch.float32 if tensor.is_floating_point() else torch.int64)


def _inputs(array) -> torch.Tensor:
    """Inputs as float32; uint8 images stay uint8 (4x smaller in memory; the model scales them)."""
    tensor = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
    return tensor if tensor.dtype == torch.uint8 else tensor.to(torch.float32)


class MultiTaskData:
    """All splits of a multi-task family as tensors on one device."""

    def __init__(self, tasks, device: torch.device | str = "cpu"):
        for attribute in ("task_names", "splits", "arrays"):
            if not hasattr(tasks, attribute):
                raise ValueError(f"data.family: the family's Tasks has no {attribute!r}; the MTL runner needs a "
                                 "multi-task family (task_names, splits, arrays(split, task))")
        self.source = tasks
        self.names = [str(name) for name in tasks.task_names]
        self.device = torch.device(device)
        missing = [split for split in ("train", "test") if split not in tasks.splits]
        if missing:
            raise ValueError(f"data.family: the MTL runner needs split {missing[0]!r}; "
                             f"the family has {list(tasks.splits)}")
        self.shared_inputs = bool(getattr(tasks, "shared_inputs", False))
        self.tensors: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for split in tasks.splits:
            pairs, inputs = [], {}  # the same array for several tasks becomes one tensor
            for name in self.names:
                x, y = tasks.arrays(split, name)
                if id(x) not in inputs:
                    inputs[id(x)] = (x, _inputs(x).to(self.device))
                pairs.append((inputs[id(x)][1], _targets(y).to(self.device)))
            self.tensors[split] = pairs
        self.objectives = [self._objective(i) for i in range(len(self.names))]
        self.num_classes = [o.outputs for o in self.objectives]  # the heads' outputs: classes, or channels
        self.input_dim = int(np.prod(self.tensors["train"][0][0].shape[1:]))

    def _objective(self, task: int) -> Objective:
        if hasattr(self.source, "objective"):
            return objective(**self.source.objective(self.names[task]))
        return objective("classification", self._classes(task))

    def _classes(self, task: int) -> int:
        if hasattr(self.source, "num_classes"):
            return int(self.source.num_classes(self.names[task]))
        return int(max(int(pairs[task][1].max()) for pairs in self.tensors.values()) + 1)

    @property
    def num_tasks(self) -> int:
        return len(self.names)

    def has_split(self, split: str) -> bool:
        return split in self.tensors

    def size(self, split: str, task: int) -> int:
        return int(self.tensors[split][task][1].shape[0])

    def split(self, split: str, task: int) -> TaskBatch:
        x, y = self.tensors[split][task]
        return TaskBatch(x, y, torch.arange(y.shape[0], device=self.device))

    def batch(self, split: str, iteration: int, seed: int, batch_size: int, stream: str) -> list[TaskBatch]:
        """Mini-batch ``iteration`` of every task (batch_size <= 0 or >= the split size: the whole split)."""
        if stream not in STREAMS:
            raise ValueError(f"stream: unknown {stream!r}; known: {list(STREAMS)}")
        out, selected = [], {}
        for task in range(self.num_tasks):
            n = self.size(split, task)
            if batch_size <= 0 or batch_size >= n:
                out.append(self.split(split, task))
                continue
            per_epoch = n // batch_size
            epoch, position = divmod(iteration, per_epoch)
            key = [seed, zlib.crc32(f"{stream}/{split}".encode()), 0 if self.shared_inputs else task, epoch]
            order = np.random.default_rng(key).permutation(n)[position * batch_size:(position + 1) * batch_size]
            indices = torch.as_tensor(order, device=self.device)
            x, y = self.tensors[split][task]
            if id(x) not in selected:  # shared inputs: one gather serves every task
                selected[id(x)] = x[indices]
            out.append(TaskBatch(selected[id(x)], y[indices], indices))
        return out
