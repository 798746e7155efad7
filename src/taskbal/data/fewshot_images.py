"""N-way K-shot image classification over a real dataset split by class (Omniglot, mini-ImageNet,
tiered-ImageNet, CUB): the few-shot tables of TOW, SIMOL and Nash-GBML.

The family reads a dataset's split file (``results/dataset_splits/<dataset>/<split_variant>.json``,
rule ``dataset_split``: which classes and images form train, val and test under the paper's protocol)
and the dataset's images under ``resources/<dataset>/``, and writes one ``.npz`` with every image of
the three splits resized to ``image_size`` (uint8, grouped by class in the split file's order) and the
fixed validation and test episodes, with a sidecar naming the data's source (the dataset's
``.verified`` record: upstream, a local copy or an offline copy) so that every table built from it says
where its images came from.

Episodes. An episode is ``ways`` classes, ``shots`` support and ``query`` query images of each, labels
0 … ways−1 in the order the classes were drawn. Training task ``i`` is drawn from a generator seeded by
``(split_seed, i)`` alone (:func:`taskbal.data.episodes.episode_generator`), so the training pool
(``train_tasks`` indices, each visited once before any twice by the runner) needs no storage and a
resumed run sees the same tasks; the validation and test episodes are drawn once, the same way, and
stored in the file, so every method is evaluated on the same tasks. ``test_query`` (default: ``query``)
is the query size of the stored episodes (SIMOL's worst-10 % values imply one query image per class at
1-shot).

``task_classes``: ``any`` (the classes of a task are any ``ways`` classes of the split) or ``one_group``
(all of them from one group — for Omniglot an alphabet: TOW "utilises the hierarchy structure of
alphabet-character to form finer-grained classification tasks"; a class's group is its name up to the
last ``/``, so datasets without groups refuse it). The group of a task is drawn uniformly among the
groups that have at least ``ways`` classes.

Any-shot episodes (TOW's Table 3 and Figure 2, after H. B. Lee et al. 2020's "realistic" task distribution):
``shots: {low: 1, high: 50, per_class_probability: 0.5}`` draws, per episode, with that probability one number of
shots per class (class imbalance), else one number shared by all classes, each uniform on low … high; a class
with fewer than shots + query images gets all but ``query`` of them as its support set (``capped``: how often, in
the sidecar, for the stored episodes). Every class keeps ``query`` query images. The support sets then differ in
size from task to task: a batch stacks them padded with ``support_counts`` (``TaskBatch``), and the learners
process it one task at a time, each on its real support set.

Monitored windows (TOW's Figures 4–5: the weights TOW gives to pre-defined tasks along training).
``monitor: {windows: [<classes>_<split>, ...], batches: T, tasks: M}`` stores, per window, T meta-batches
of M training-shaped episodes (``shots`` + ``query`` images per class) drawn once from ``split`` (train,
val or test), where ``classes`` is ``same`` (the M tasks of a meta-batch share one group: "all tasks in a
mini-batch are formed from one alphabet"), ``different`` (M distinct groups, each task within its own:
"tasks formed from different alphabets") or ``any`` (as ``task_classes``; datasets without groups). The
training run plans weights for them at every curve point without training on them
(``taskbal.train.Run``); they never enter training.

Pixels are scaled to [0, 1] (float32) when a batch is built; images stay uint8 in memory.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..io import verified_sidecar, write_arrays
from ..learners import TaskBatch
from .checks import check_integer, data_settings
from .episodes import episode_generator
from .resources import dataset_inputs, dataset_split_file

SPLITS = ("train", "val", "test")
REQUIRED_KEYS = ("dataset", "split_variant", "ways", "shots", "query", "train_tasks", "val_tasks", "test_tasks",
                 "split_seed")
DEFAULTS = {"image_size": None, "test_query": None, "task_classes": "any", "monitor": None, "resources": "resources",
            "dataset_splits": "results/dataset_splits"}
INTEGERS = {"ways": 2, "shots": 1, "query": 1, "train_tasks": 1, "val_tasks": 1, "test_tasks": 1, "split_seed": 0}
TASK_CLASSES = ("any", "one_group")
DEFAULT_SIDE = {"omniglot": 28}  # every other dataset: 84 (mini-/tiered-ImageNet, CUB as the papers use them)
EVAL_SEED_OFFSET = {"val": 1, "test": 2}  # the stored episodes' generators: (split_seed + offset, index)
MONITOR_SEED_OFFSET = 100  # monitored window w: generators (split_seed + 100 + w, index)
MONITOR_CLASSES = ("same", "different", "any")


ANY_SHOT_KEYS = ("low", "high", "per_class_probability")


def check_any_shot(shots) -> None:
    if set(shots) != set(ANY_SHOT_KEYS):
        raise ValueError(f"data.shots: an integer, or any-shot episodes {{low, high, per_class_probability}}; "
                         f"got {shots!r}")
    check_integer("shots.low", shots["low"], 1)
    check_integer("shots.high", shots["high"], shots["low"])
    probability = shots["per_class_probability"]
    if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
        raise ValueError(f"data.shots.per_class_probability: expected a number in [0, 1], got {probability!r}")


def most_shots(shots) -> int:
    """Support images per class at most: ``shots``, or an any-shot episode's ``high``."""
    return shots["high"] if isinstance(shots, dict) else shots


def check_data(data: dict) -> dict:
    any_shot = isinstance(data.get("shots"), dict)
    integers = {key: low for key, low in INTEGERS.items() if not (any_shot and key == "shots")}
    settings = data_settings(data, "fewshot_images", REQUIRED_KEYS, DEFAULTS, integers)
    if any_shot:
        check_any_shot(settings["shots"])
        if settings["monitor"] is not None:
            raise ValueError("data.monitor: monitored windows of any-shot episodes are not supported")
    from .datasets import DATASETS

    if settings["dataset"] not in DATASETS or not hasattr(DATASETS[settings["dataset"]], "load_images"):
        known = sorted(name for name, module in DATASETS.items() if hasattr(module, "load_images"))
        raise ValueError(f"data.dataset: {settings['dataset']!r} is not a dataset split by class; known: {known}")
    for key in ("image_size", "test_query"):
        if settings[key] is not None:
            check_integer(key, settings[key], 1)
    if settings["task_classes"] not in TASK_CLASSES:
        raise ValueError(f"data.task_classes: expected one of {list(TASK_CLASSES)}, got {settings['task_classes']!r}")
    if settings["monitor"] is not None:
        check_monitor(settings["monitor"])
    return settings


def check_monitor(monitor) -> None:
    if not isinstance(monitor, dict) or set(monitor) != {"windows", "batches", "tasks"}:
        raise ValueError("data.monitor: expected {windows: [<same|different|any>_<train|val|test>, ...], "
                         f"batches: T, tasks: M}}, got {monitor!r}")
    check_integer("monitor.batches", monitor["batches"], 1)
    check_integer("monitor.tasks", monitor["tasks"], 1)
    windows = monitor["windows"]
    if not isinstance(windows, list) or not windows or len(set(map(str, windows))) != len(windows):
        raise ValueError(f"data.monitor.windows: expected a list of distinct window names, got {windows!r}")
    for name in windows:
        classes, _, split = str(name).partition("_")
        if classes not in MONITOR_CLASSES or split not in SPLITS:
            raise ValueError(f"data.monitor.windows: {name!r} is not <classes>_<split> with classes one of "
                             f"{list(MONITOR_CLASSES)} and split one of {list(SPLITS)}")



def input_files(data: dict) -> list[str]:
    """The dataset's record and split file (the split rule's inputs)."""
    settings = check_data(data)
    return dataset_inputs(settings, settings["dataset"])


def class_groups(classes: list[str], rotations: int) -> np.ndarray:
    """The group index of every class (a class name up to its last ``/``), each class repeated per rotation."""
    names = [c.rsplit("/", 1)[0] if "/" in c else c for c in classes for _ in range(rotations)]
    index = {name: i for i, name in enumerate(sorted(set(names)))}
    return np.array([index[name] for name in names], dtype=np.int64)


def episode_batch(images: torch.Tensor, shots: int) -> TaskBatch:
    """k episodes of uint8 images [k, ways, shots + queries, C, H, W] as a TaskBatch of floats in [0, 1]: the
    first ``shots`` of each class are the support set, labels 0 … ways−1 class by class, and ``features``
    the support images, flattened (SIMOL's re-weighting network)."""
    k, ways, per_class, *shape = images.shape
    x = images.float() / 255.0
    support_x = x[:, :, :shots].reshape(k, ways * shots, *shape)
    query_x = x[:, :, shots:].reshape(k, ways * (per_class - shots), *shape)
    labels = torch.arange(ways).view(1, ways, 1)
    support_y = labels.expand(k, ways, shots).reshape(k, -1)
    query_y = labels.expand(k, ways, per_class - shots).reshape(k, -1)
    return TaskBatch(support_x, support_y, query_x, query_y, support_x.flatten(1))


def draw_shots(generator: torch.Generator, ways: int, shots: dict) -> torch.Tensor:
    """Shots per class [ways] of one any-shot episode: with ``per_class_probability`` one draw per class, else one
    draw for all of them, uniform on low … high."""
    per_class = bool(torch.rand((), generator=generator) < shots["per_class_probability"])
    drawn = torch.randint(shots["low"], shots["high"] + 1, (ways if per_class else 1,), generator=generator)
    return drawn.expand(ways).clone()


def any_shot_batch(images: torch.Tensor, rows: torch.Tensor, counts: torch.Tensor, high: int) -> TaskBatch:
    """Any-shot episodes as one ragged TaskBatch: ``rows`` [k, ways, high + query] (support rows first, −1 after a
    class's ``counts`` [k, ways] of them, then the query rows) index ``images``; each task's support set is its
    classes' support images in class order, padded with zeros to the largest of the batch."""
    k, ways, width = rows.shape
    queries = width - high
    x = lambda r: images.index_select(0, r.reshape(-1)).float().div_(255.0).view(*r.shape, *images.shape[1:])  # noqa: E731
    query_x = x(rows[:, :, high:]).reshape(k, ways * queries, *images.shape[1:])
    query_y = torch.arange(ways).repeat_interleave(queries).expand(k, -1)
    sizes = counts.sum(1)
    support_x = torch.zeros(k, int(sizes.max()), *images.shape[1:])
    support_y = torch.zeros(k, int(sizes.max()), dtype=torch.int64)
    for i in range(k):
        real = rows[i, :, :high][torch.arange(high).expand(ways, high) < counts[i, :, None]]  # class by class
        support_x[i, :len(real)] = x(real)
        support_y[i, :len(real)] = torch.arange(ways).repeat_interleave(counts[i])
    return TaskBatch(support_x, support_y, query_x, query_y, support_x.flatten(1), support_counts=sizes)


class ClassPool:
    """One split's images by class, and the drawing of episodes from it (one generator per episode)."""

    def __init__(self, sizes: torch.Tensor, groups: torch.Tensor):
        self.sizes, self.groups = sizes, groups
        self.offsets = torch.cumsum(sizes, 0) - sizes
        self.by_group = [torch.nonzero(groups == g).flatten() for g in range(int(groups.max()) + 1)]

    def eligible_groups(self, ways: int) -> list[int]:
        eligible = [g for g, members in enumerate(self.by_group) if len(members) >= ways]
        if not eligible:
            raise ValueError(f"data.task_classes: no group has {ways} classes")
        return eligible

    def draw(self, generator: torch.Generator, ways: int, per_class: int, one_group: bool,
             group: int | None = None) -> tuple:
        """(classes [ways], rows [ways, per_class]) of one episode: distinct classes, distinct images per class
        (``group``: all of them from that group)."""
        classes = self.draw_classes(generator, ways, one_group, group)
        rows = torch.stack([self.offsets[c] + torch.randperm(int(self.sizes[c]), generator=generator)[:per_class]
                            for c in classes])
        return classes, rows

    def draw_classes(self, generator: torch.Generator, ways: int, one_group: bool, group: int | None = None):
        """The ``ways`` distinct classes [ways] of one episode."""
        if group is not None:
            candidates = self.by_group[group]
        elif one_group:
            eligible = self.eligible_groups(ways)
            candidates = self.by_group[eligible[int(torch.randint(len(eligible), (1,), generator=generator))]]
        else:
            candidates = torch.arange(len(self.sizes))
        return candidates[torch.randperm(len(candidates), generator=generator)[:ways]]

    def draw_any_shot(self, generator: torch.Generator, ways: int, shots: dict, query: int, one_group: bool) -> tuple:
        """(classes [ways], rows [ways, high + query], counts [ways], capped) of one any-shot episode: counts[c]
        support rows then −1 up to ``high``, then ``query`` query rows; a class of fewer than counts[c] + query
        images gives all but ``query`` of them (``capped``: the number of such classes)."""
        counts = draw_shots(generator, ways, shots)
        classes = self.draw_classes(generator, ways, one_group)
        rows, capped = [], 0
        for c, (cls, count) in enumerate(zip(classes.tolist(), counts.tolist())):
            size = int(self.sizes[cls])
            if count + query > size:
                count, capped = size - query, capped + 1
                counts[c] = count
            order = self.offsets[cls] + torch.randperm(size, generator=generator)[:count + query]
            padding = torch.full((shots["high"] - count,), -1, dtype=order.dtype)
            rows.append(torch.cat([order[:count], padding, order[count:]]))
        return classes, torch.stack(rows), counts, capped


def check_pool(sizes: np.ndarray, groups: np.ndarray, split: str, ways: int, per_class: int, one_group: bool) -> None:
    usable = sizes >= per_class
    if one_group:
        counts = np.bincount(groups[usable], minlength=groups.max() + 1)
        if counts.max(initial=0) < ways:
            raise ValueError(f"data.task_classes: one_group needs a group with {ways} classes of >= {per_class} "
                             f"images in split {split!r}; the largest has {counts.max(initial=0)}")
    if not usable.all():
        raise ValueError(f"data.query: {split!r} has classes with fewer than {per_class} images (shots + query)")
    if usable.sum() < ways:
        raise ValueError(f"data.ways: {ways}-way tasks but split {split!r} has {int(usable.sum())} classes")


def monitored_rows(pool: ClassPool, name: str, monitor: dict, seed: int, ways: int, per_class: int,
                   one_group: bool) -> torch.Tensor:
    """Image rows [T·M, ways, per_class] of the monitored window ``name`` (``monitor``: its shape), meta-batch
    after meta-batch; the groups of a meta-batch are drawn first, from its own generator."""
    classes = name.partition("_")[0]
    batches, tasks = monitor["batches"], monitor["tasks"]
    rows = []
    for b in range(batches):
        picker = episode_generator(seed, b)
        if classes == "any":
            groups = [None] * tasks
        else:
            eligible = pool.eligible_groups(ways)
            if classes == "different" and len(eligible) < tasks:
                raise ValueError(f"data.monitor.windows: {name!r} needs {tasks} groups of {ways} classes, the split "
                                 f"has {len(eligible)}")
            order = torch.randperm(len(eligible), generator=picker)
            chosen = order[:1].repeat(tasks) if classes == "same" else order[:tasks]
            groups = [eligible[int(i)] for i in chosen]
        for i, group in enumerate(groups):
            generator = episode_generator(seed, batches + b * tasks + i)
            rows.append(pool.draw(generator, ways, per_class, one_group, group)[1])
    return torch.stack(rows)


def write_splits(path: Path | str, data: dict) -> dict:
    """Every image of the dataset split's train / val / test classes, and the fixed val / test episodes."""
    from .datasets import read_record
    from .episodes import split_images
    from .splitfile import read_split_file

    settings = check_data(data)
    split_file = read_split_file(dataset_split_file(settings, settings["dataset"]))
    dataset, side = settings["dataset"], settings["image_size"] or DEFAULT_SIDE.get(settings["dataset"], 84)
    resource_dir = Path(settings["resources"]) / dataset
    record = read_record(settings["resources"], dataset)
    rotations = len(split_file["options"].get("rotations", [0]))
    one_group = settings["task_classes"] == "one_group"
    ways, test_query = settings["ways"], settings["test_query"] or settings["query"]
    shots = settings["shots"]
    any_shot = isinstance(shots, dict)
    arrays, counts, capped = {}, {}, {}
    for split in SPLITS:
        images, sizes = split_images(split_file, resource_dir, split, side)
        sizes = np.asarray(sizes, dtype=np.int64)
        groups = class_groups(split_file["splits"][split]["classes"], rotations)
        query = settings["query"] if split == "train" else test_query
        check_pool(sizes, groups, split, ways, (shots["low"] if any_shot else shots) + query, one_group)
        arrays.update({f"{split}_images": images.numpy(), f"{split}_class_sizes": sizes, f"{split}_groups": groups})
        counts[split] = {"classes": len(sizes), "images": int(sizes.sum()), "groups": int(groups.max()) + 1}
        if split != "train":
            pool = ClassPool(torch.from_numpy(sizes), torch.from_numpy(groups))
            generators = [episode_generator(settings["split_seed"] + EVAL_SEED_OFFSET[split], i)
                          for i in range(settings[f"{split}_tasks"])]
            if any_shot:
                drawn = [pool.draw_any_shot(g, ways, shots, test_query, one_group) for g in generators]
                arrays[f"{split}_shots"] = torch.stack([d[2] for d in drawn]).numpy()
                capped[split] = sum(d[3] for d in drawn)
            else:
                drawn = [pool.draw(g, ways, shots + test_query, one_group) for g in generators]
            arrays[f"{split}_classes"] = torch.stack([d[0] for d in drawn]).numpy()
            arrays[f"{split}_rows"] = torch.stack([d[1] for d in drawn]).numpy()
    monitor = settings["monitor"]
    for w, name in enumerate((monitor or {}).get("windows", [])):
        classes, _, split = name.partition("_")
        sizes, groups = arrays[f"{split}_class_sizes"], arrays[f"{split}_groups"]
        if classes != "any" and np.bincount(groups).max() < ways:
            raise ValueError(f"data.monitor.windows: {name!r} needs groups of {ways} classes; no group of {dataset}'s "
                             f"{split} split has that many (use any_{split})")
        check_pool(sizes, groups, split, ways, settings["shots"] + settings["query"], one_group)
        pool = ClassPool(torch.from_numpy(sizes), torch.from_numpy(groups))
        seed = settings["split_seed"] + MONITOR_SEED_OFFSET + w
        arrays[f"monitor_{name}_rows"] = monitored_rows(pool, name, monitor, seed, ways,
                                                        settings["shots"] + settings["query"], one_group).numpy()
    source = record.get("source", "unknown")
    meta = {"family": "fewshot_images", "dataset": dataset, "split_variant": settings["split_variant"],
            "dataset_split_sha256": split_file["sha256"], "exact_split": bool(split_file.get("exact")),
            "complete": split_file.get("complete"), "image_size": side,
            "channels": int(arrays["train_images"].shape[1]),
            "ways": ways, "shots": shots, "query": settings["query"], "test_query": test_query,
            **({"capped": capped} if any_shot else {}),
            "task_classes": settings["task_classes"], "seed": settings["split_seed"], "counts": counts,
            "monitor": monitor,
            "sizes": {split: settings[f"{split}_tasks"] for split in SPLITS},
            "data_source": {dataset: f"{split_file.get('protocol', '')}; source: {source}"}}
    return write_arrays(path, arrays, meta)


class FewShotImageTasks:
    """Read-only view of a split file: training episodes drawn by index, stored val / test episodes."""

    eval_chunk = 50  # tasks per evaluation batch: a conv net's activations for every task of a split do not fit

    def __init__(self, path: Path | str):
        path = Path(path)
        self.meta = verified_sidecar(path, "split")
        with np.load(path) as data:
            self.arrays = {key: torch.from_numpy(data[key]) for key in data.files}
        self.ways, self.shots, self.query = self.meta["ways"], self.meta["shots"], self.meta["query"]
        self.test_query = self.meta["test_query"]
        self.one_group = self.meta["task_classes"] == "one_group"
        self.pools = {split: ClassPool(self.arrays[f"{split}_class_sizes"], self.arrays[f"{split}_groups"])
                      for split in SPLITS}
        shape = tuple(self.arrays["train_images"].shape[1:])
        self.io_dims = (shape, self.ways)
        # the support images, flattened in TaskBatch.features; their shape for a network that reads images
        self.any_shot = isinstance(self.shots, dict)
        self.feature_dim = (self.ways * most_shots(self.shots), *shape)

    def num_tasks(self, split: str) -> int:
        return int(self.meta["sizes"][split])

    def episode_rows(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Image rows [k, ways, shots + query] of the episodes ``indices`` of ``split``, and for any-shot episodes
        their shots per class [k, ways] (rows [k, ways, high + query], see ``ClassPool.draw_any_shot``)."""
        if split != "train":
            shots = self.arrays[f"{split}_shots"][indices] if self.any_shot else None
            return self.arrays[f"{split}_rows"][indices], shots
        pool, generators = self.pools["train"], [episode_generator(self.meta["seed"], int(i)) for i in indices]
        if self.any_shot:
            drawn = [pool.draw_any_shot(g, self.ways, self.shots, self.query, self.one_group) for g in generators]
            return torch.stack([d[1] for d in drawn]), torch.stack([d[2] for d in drawn])
        per_class = self.shots + self.query
        return torch.stack([pool.draw(g, self.ways, per_class, self.one_group)[1] for g in generators]), None

    def batch(self, split: str, indices: torch.Tensor | None = None) -> TaskBatch:
        """Tasks ``indices`` of ``split`` (all of them by default) as one TaskBatch of float images in [0, 1]."""
        if indices is None:
            indices = torch.arange(self.num_tasks(split))
        indices = torch.as_tensor(indices)
        rows, shots = self.episode_rows(split, indices)
        if shots is not None:
            return any_shot_batch(self.arrays[f"{split}_images"], rows, shots, self.shots["high"])
        return self.rows_batch(split, rows)

    def rows_batch(self, split: str, rows: torch.Tensor) -> TaskBatch:
        """Episodes given by image rows [k, ways, shots + query] of ``split`` as one TaskBatch."""
        images = self.arrays[f"{split}_images"]
        return episode_batch(images.index_select(0, rows.reshape(-1)).view(*rows.shape, *images.shape[1:]),
                             self.shots)

    def monitor_windows(self) -> dict[str, list[TaskBatch]]:
        """The monitored windows (``data.monitor``): per name, its T meta-batches of M episodes."""
        monitor = self.meta.get("monitor") or {}
        windows = {}
        for name in monitor.get("windows", []):
            batch = self.rows_batch(name.partition("_")[2], self.arrays[f"monitor_{name}_rows"])
            windows[name] = batch.chunks(monitor["tasks"])
        return windows

    def task_table(self, split: str) -> dict[str, np.ndarray]:
        """Per stored episode: its classes (positions in the split's class list) and whether they share a group."""
        classes = self.arrays[f"{split}_classes"].numpy()
        groups = self.arrays[f"{split}_groups"].numpy()[classes]
        return {"classes": np.array([json.dumps(c.tolist()) for c in classes]),
                "one_group": (groups == groups[:, :1]).all(1).astype(np.int64)}

    def curve_metrics(self, learner, device: torch.device, split: str = "val") -> dict:
        """Accuracy and loss after adaptation on every stored ``split`` episode (TOW's 100 validation tasks)."""
        parts: dict[str, list[torch.Tensor]] = {}
        for start in range(0, self.num_tasks(split), self.eval_chunk):
            indices = torch.arange(start, min(start + self.eval_chunk, self.num_tasks(split)))
            for name, values in learner.evaluate_tasks(self.batch(split, indices).to(device)).items():
                parts.setdefault(name, []).append(values.detach().cpu())
        return {f"{split}_{name}": float(torch.cat(values).mean()) for name, values in sorted(parts.items())}


Tasks = FewShotImageTasks  # the name every family module exports
