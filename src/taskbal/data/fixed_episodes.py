"""Fixed evaluation episodes: the N-way K-shot test tasks written into a split file, so that every
method is evaluated on the same tasks. NumPy only (the split builders and the workflow use it)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _shots_for(rng: np.random.Generator, ways: int, shots, available: np.ndarray, queries: int) -> np.ndarray:
    """Support size per class: a fixed int, or the any-shot rule of Lee et al. (2020).

    Any-shot (``{"min": 1, "max": 50, "per_class_prob": 0.5}``): with probability
    ``per_class_prob`` every class draws its own k ~ U{min..max} (class imbalance), otherwise
    one k ~ U{min..max} is shared by the task's classes. k is capped at (images of the
    class − queries).
    """
    if isinstance(shots, int):
        return np.full(ways, shots)
    low, high = int(shots["min"]), int(shots["max"])
    if rng.random() < float(shots.get("per_class_prob", 0.5)):
        k = rng.integers(low, high + 1, size=ways)
    else:
        k = np.full(ways, rng.integers(low, high + 1))
    return np.minimum(k, available - queries)


def draw_episodes(class_sizes: Sequence[int], ways: int, shots, queries: int, count: int, seed: int) -> dict:
    """``count`` episodes over classes with ``class_sizes[c]`` images each; plain lists (JSON-ready).

    Each episode: ``classes`` [ways] distinct class positions; ``support`` [ways][k_c] and
    ``query`` [ways][queries] image positions within each class, all distinct within a class.
    Drawn with NumPy's PCG64 from ``seed`` only, so the same arguments give the same lists.
    """
    sizes = np.asarray(class_sizes, dtype=np.int64)
    need = (shots if isinstance(shots, int) else int(shots["min"])) + queries
    eligible = np.flatnonzero(sizes >= need)
    if ways < 1 or count < 1:
        raise ValueError(f"episodes: ways ({ways}) and count ({count}) must be positive")
    if len(eligible) < ways:
        raise ValueError(f"episodes: only {len(eligible)} classes have >= {need} images (shots + queries); "
                         f"{ways}-way episodes need {ways}")
    rng = np.random.Generator(np.random.PCG64(seed))
    classes, support, query = [], [], []
    for _ in range(count):
        chosen = np.sort(rng.choice(eligible, size=ways, replace=False))
        k = _shots_for(rng, ways, shots, sizes[chosen], queries)
        sup, que = [], []
        for c, kc in zip(chosen, k):
            order = rng.permutation(sizes[c])[: kc + queries]
            sup.append(sorted(int(i) for i in order[:kc]))
            que.append(sorted(int(i) for i in order[kc:]))
        classes.append([int(c) for c in chosen])
        support.append(sup)
        query.append(que)
    spec = shots if isinstance(shots, int) else dict(sorted(shots.items()))
    return {"ways": ways, "shots": spec, "queries": queries, "count": count, "seed": seed,
            "classes": classes, "support": support, "query": query}
