"""N-way K-shot episodes: fixed evaluation sets, a batched in-memory sampler, learn2learn task sets.

Three ways to get episodes, all speaking in the same terms — a *class* is a position in a
split's class list (for Omniglot with rotations: character × rotation), an *image* is a
position within its class's image list in the split file:

* :func:`draw_episodes` (from :mod:`.fixed_episodes`) — a fixed set of evaluation episodes (e.g. 600
  or 1,000 test tasks), written into the split file so every method is evaluated on the same tasks;
* :class:`EpisodeSampler` — training episodes drawn in one batched call from an in-memory
  tensor of images grouped by class (no Python loop over tasks or classes), reproducible
  from ``(seed, iteration)`` so a resumed run sees the same tasks;
* :func:`l2l_taskset` — learn2learn's ``MetaDataset`` / ``TaskDataset`` with its ``NWays``,
  ``KShots``, ``LoadData`` and ``RemapLabels`` transforms over any (image, label) dataset,
  e.g. torchvision's ``Omniglot`` or ``ImageFolder``; kept as the reference the batched
  sampler is tested and benchmarked against.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from .fixed_episodes import draw_episodes

__all__ = ["EpisodeSampler", "draw_episodes", "episode_generator", "l2l_taskset", "split_images"]


def episode_generator(seed: int, iteration: int) -> torch.Generator:
    """A torch generator that depends only on (seed, iteration)."""
    digest = hashlib.sha256(f"episodes:{seed}:{iteration}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


class EpisodeSampler:
    """Batched N-way (K+Q)-shot sampling from images held in memory, grouped by class.

    ``images``: [C, M, ...] (every class has M images) or a flat [n, ...] tensor with
    ``class_sizes`` giving how many consecutive rows belong to each class. One call draws a
    whole meta-batch: the classes of every task by a batched random permutation, the images
    of every (task, class) by a batched masked permutation, and one gather.

    ``sample(tasks, ways, shots, queries, generator)`` returns ``(support_x [T, N·K, ...],
    support_y [T, N·K], query_x [T, N·Q, ...], query_y [T, N·Q], classes [T, N])`` with labels
    0..N−1 in the order of ``classes``.
    """

    def __init__(self, images: torch.Tensor, class_sizes: Sequence[int] | None = None):
        if class_sizes is None:
            if images.dim() < 2:
                raise ValueError("EpisodeSampler: images must be [classes, images_per_class, ...]")
            self.num_classes, per_class = images.shape[:2]
            self.flat = images.reshape(self.num_classes * per_class, *images.shape[2:])
            sizes = torch.full((self.num_classes,), per_class, dtype=torch.long)
        else:
            sizes = torch.as_tensor(list(class_sizes), dtype=torch.long)
            if int(sizes.sum()) != images.shape[0]:
                raise ValueError(f"EpisodeSampler: class_sizes sum to {int(sizes.sum())} but images has "
                                 f"{images.shape[0]} rows")
            self.num_classes, self.flat = len(sizes), images
        self.sizes = sizes
        self.offsets = torch.cumsum(sizes, 0) - sizes
        self.max_size = int(sizes.max())
        self.uniform = bool((sizes == self.max_size).all())

    def positions(self, tasks: int, ways: int, per_class: int, generator: torch.Generator):
        """Class ids [T, N] and row indices [T, N, per_class] into ``flat`` (distinct within a class)."""
        if ways > self.num_classes:
            raise ValueError(f"EpisodeSampler: {ways}-way tasks but only {self.num_classes} classes")
        if per_class > int(self.sizes.min()):
            raise ValueError(f"EpisodeSampler: {per_class} images per class (shots + queries) but the "
                             f"smallest class has {int(self.sizes.min())}")
        classes = torch.rand(tasks, self.num_classes, generator=generator).argsort(dim=1)[:, :ways]
        keys = torch.rand(tasks, ways, self.max_size, generator=generator)
        if not self.uniform:  # positions beyond a class's size sort last
            keys = keys.masked_fill(torch.arange(self.max_size) >= self.sizes[classes].unsqueeze(-1), 2.0)
        within = keys.argsort(dim=-1)[..., :per_class]
        return classes, self.offsets[classes].unsqueeze(-1) + within

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """``flat[rows]`` via ``index_select`` (several times faster than advanced indexing on big image tensors)."""
        return self.flat.index_select(0, rows.reshape(-1)).view(*rows.shape, *self.flat.shape[1:])

    def sample(self, tasks: int, ways: int, shots: int, queries: int, generator: torch.Generator):
        classes, rows = self.positions(tasks, ways, shots + queries, generator)
        batch = self.gather(rows)  # [T, N, K+Q, ...]
        tail = batch.shape[3:]
        labels = torch.arange(ways).view(1, ways, 1)
        support_x = batch[:, :, :shots].reshape(tasks, ways * shots, *tail)
        query_x = batch[:, :, shots:].reshape(tasks, ways * queries, *tail)
        support_y = labels.expand(tasks, ways, shots).reshape(tasks, -1)
        query_y = labels.expand(tasks, ways, queries).reshape(tasks, -1)
        return support_x, support_y, query_x, query_y, classes

    def fixed(self, episodes: dict, start: int = 0, stop: int | None = None):
        """The episodes of a :func:`draw_episodes` set (fixed shots) as the same batched tensors."""
        if not isinstance(episodes["shots"], int):
            raise ValueError("EpisodeSampler.fixed: any-shot episodes have ragged support sets; index them per task")
        sl = slice(start, stop)
        classes = torch.tensor(episodes["classes"][sl])
        support = torch.tensor(episodes["support"][sl])
        query = torch.tensor(episodes["query"][sl])
        tasks, ways, shots = support.shape
        queries = query.shape[-1]
        offsets = self.offsets[classes].unsqueeze(-1)
        sx, qx = self.gather(offsets + support), self.gather(offsets + query)
        labels = torch.arange(ways).view(1, ways, 1)
        return (sx.reshape(tasks, ways * shots, *sx.shape[3:]), labels.expand(tasks, ways, shots).reshape(tasks, -1),
                qx.reshape(tasks, ways * queries, *qx.shape[3:]),
                labels.expand(tasks, ways, queries).reshape(tasks, -1),
                classes)


def l2l_taskset(dataset, ways: int, shots: int, queries: int, num_tasks: int = -1):
    """learn2learn ``TaskDataset`` of N-way (K+Q)-shot tasks over an (image, label) dataset.

    ``dataset`` is anything indexable returning ``(x, y)`` (a torchvision dataset, a
    ``TensorDataset``, ...); a ``targets`` attribute (torchvision's ``ImageFolder``, ``MNIST``)
    is used for the label index instead of loading every item. learn2learn samples with Python's ``random``: seed it for
    reproducible tasks. Each task is ``(x [N·(K+Q), ...], y [N·(K+Q)])`` with labels 0..N−1;
    split support/query with :func:`learn2learn.data.partition_task`.
    """
    import learn2learn as l2l

    if isinstance(dataset, l2l.data.MetaDataset):
        meta = dataset
    elif hasattr(dataset, "targets"):  # torchvision datasets: no need to load every image to learn its label
        by_label: dict[int, list[int]] = {}
        for index, label in enumerate(torch.as_tensor(dataset.targets).tolist()):
            by_label.setdefault(label, []).append(index)
        meta = l2l.data.MetaDataset(dataset, labels_to_indices=by_label)
    else:
        meta = l2l.data.MetaDataset(dataset)
    transforms = [l2l.data.transforms.NWays(meta, ways), l2l.data.transforms.KShots(meta, shots + queries),
                  l2l.data.transforms.LoadData(meta), l2l.data.transforms.RemapLabels(meta)]
    return l2l.data.TaskDataset(meta, task_transforms=transforms, num_tasks=num_tasks)


# ----------------------------------------------------------------------------- images of a split, in memory


def split_images(split_file: dict, resource_dir, split: str, side: int | None = None):
    """All images of one split of a class-split dataset, as ``(images uint8 [n, C, H, W], class_sizes)``.

    Classes and images come in the split file's order (for Omniglot with rotations: each
    character's images once per rotation, rotation fastest), so class position c and image
    position i of an episode address row ``offsets[c] + i``. Feed the result to
    :class:`EpisodeSampler` (scale to float there: keeping uint8 in memory is 4x smaller).
    Images are resized to ``side`` (defaults: Omniglot 28, the others 84). The dataset's module
    reads them (its ``load_images``, :mod:`taskbal.data.datasets`).
    """
    from .datasets import DATASETS

    name = split_file["dataset"]
    if split not in split_file["splits"]:  # a KeyError, whatever the dataset
        raise KeyError(split)
    module = DATASETS.get(name)
    if not hasattr(module, "load_images"):
        raise ValueError(f"split_images: {name} is not split by class")
    return module.load_images(split_file, resource_dir, split, side)
