"""N-way K-shot episodes: fixed sets, the batched sampler, learn2learn / torchvision task sets."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import fake_split_layouts as fake
from taskbal.data.datasets import mini_imagenet, omniglot, tiered_imagenet
from taskbal.data.episodes import EpisodeSampler, draw_episodes, episode_generator, l2l_taskset, split_images


def coded_images(sizes):
    """Row r of class c holds (c, r): every sampled image says where it came from."""
    return torch.cat([torch.stack([torch.full((s,), c), torch.arange(s)], dim=1) for c, s in enumerate(sizes)])


def test_fixed_episodes_distinct_and_reproducible():
    sizes = [20] * 30 + [16] * 5
    a = draw_episodes(sizes, ways=5, shots=1, queries=15, count=200, seed=11)
    assert a == draw_episodes(sizes, ways=5, shots=1, queries=15, count=200, seed=11)
    assert a["classes"] != draw_episodes(sizes, ways=5, shots=1, queries=15, count=200, seed=12)["classes"]
    for classes, support, query in zip(a["classes"], a["support"], a["query"]):
        assert len(set(classes)) == 5
        for c, s, q in zip(classes, support, query):
            assert len(s) == 1 and len(q) == 15 and len(set(s) | set(q)) == 16
            assert max(s + q) < sizes[c]


def test_fixed_episodes_skip_classes_too_small():
    sizes = [3, 30, 30, 2, 30]
    episodes = draw_episodes(sizes, ways=3, shots=5, queries=5, count=50, seed=0)
    assert {c for task in episodes["classes"] for c in task} == {1, 2, 4}
    with pytest.raises(ValueError, match="only 3 classes"):
        draw_episodes(sizes, ways=4, shots=5, queries=5, count=1, seed=0)


def test_any_shot_episodes_follow_lee_et_al():
    spec = {"min": 1, "max": 50, "per_class_prob": 0.5}
    episodes = draw_episodes([80] * 10, ways=5, shots=spec, queries=15, count=400, seed=1)
    imbalanced = 0
    for support, query in zip(episodes["support"], episodes["query"]):
        ks = [len(s) for s in support]
        assert all(1 <= k <= 50 for k in ks)
        assert all(len(q) == 15 and not set(q) & set(s) for s, q in zip(support, query))
        imbalanced += len(set(ks)) > 1
    # half the tasks draw one k per class (unequal but with probability ~1e-7), half share one k
    assert 160 < imbalanced < 240  # Binomial(400, 0.5): mean 200, sd 10
    capped = draw_episodes([20] * 10, ways=5, shots=spec, queries=15, count=100, seed=2)
    assert max(len(s) for task in capped["support"] for s in task) == 5  # k capped at 20 - 15


@pytest.mark.parametrize("sizes", [[20] * 12, [7, 20, 9, 30, 8, 12, 10]])
def test_sampler_tasks_are_valid_and_reproducible(sizes):
    uniform = len(set(sizes)) == 1
    codes = coded_images(sizes)
    sampler = EpisodeSampler(codes.view(len(sizes), sizes[0], 2)) if uniform else EpisodeSampler(codes, sizes)
    sx, sy, qx, qy, classes = sampler.sample(64, ways=5, shots=2, queries=5, generator=episode_generator(3, 7))
    assert sx.shape == (64, 10, 2) and qx.shape == (64, 25, 2) and classes.shape == (64, 5)
    for t in range(64):
        assert len(set(classes[t].tolist())) == 5
        images = torch.cat([sx[t], qx[t]])
        labels = torch.cat([sy[t], qy[t]])
        assert torch.equal(images[:, 0], classes[t][labels])  # label j <-> class classes[t, j]
        assert len({tuple(r) for r in images.tolist()}) == 35  # K+Q distinct images per class
        assert bool((images[:, 1] < torch.tensor(sizes)[images[:, 0]]).all())
    again = sampler.sample(64, ways=5, shots=2, queries=5, generator=episode_generator(3, 7))
    assert all(torch.equal(x, y) for x, y in zip(again, (sx, sy, qx, qy, classes)))
    other = sampler.sample(64, ways=5, shots=2, queries=5, generator=episode_generator(3, 8))
    assert not torch.equal(other[4], classes)


def test_sampler_is_uniform_over_classes_and_images():
    sizes = [4, 10, 6, 10, 5, 8]
    sampler = EpisodeSampler(coded_images(sizes), sizes)
    tasks = 6000
    sx, _, _, _, classes = sampler.sample(tasks, ways=3, shots=1, queries=0, generator=torch.Generator().manual_seed(0))
    # every class is in a task with probability 3/6; every image of a chosen class is the shot with prob 1/size
    class_counts = torch.bincount(classes.flatten(), minlength=6).double()
    expected = tasks * 3 / 6
    assert float(((class_counts - expected) ** 2 / expected).sum()) < 20.5  # chi^2, 5 dof, p ~ 0.001
    for c, size in enumerate(sizes):
        rows = sx[:, :, 1][sx[:, :, 0] == c]
        counts = torch.bincount(rows, minlength=size).double()
        expected = counts.sum() / size
        assert float(((counts - expected) ** 2 / expected).sum()) < 30  # chi^2, <= 9 dof, p < 0.001


def test_sampler_fixed_matches_the_episode_lists():
    sizes = [20] * 8
    codes = coded_images(sizes)
    sampler = EpisodeSampler(codes, sizes)
    episodes = draw_episodes(sizes, ways=4, shots=2, queries=3, count=10, seed=0)
    sx, sy, qx, qy, classes = sampler.fixed(episodes)
    for t in range(10):
        want = [[c, i] for c, s in zip(episodes["classes"][t], episodes["support"][t]) for i in s]
        assert sx[t].tolist() == want
        assert sy[t].tolist() == [j for j in range(4) for _ in range(2)]


def test_sampler_rejects_impossible_tasks():
    sampler = EpisodeSampler(torch.zeros(6, 5, 1))
    with pytest.raises(ValueError, match="7-way"):
        sampler.sample(2, ways=7, shots=1, queries=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="smallest class"):
        sampler.sample(2, ways=2, shots=3, queries=3, generator=torch.Generator())


def test_learn2learn_taskset_on_torchvision_imagefolder(tmp_path):
    """learn2learn's TaskDataset over torchvision's ImageFolder on CUB's upstream folder layout."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import ToTensor

    root = fake.cub_tree(tmp_path / "cub", per_class=3)
    dataset = ImageFolder(str(root / "CUB_200_2011" / "images"), transform=ToTensor())
    assert len(dataset) == 600 and dataset.classes[:2] == ["001.Bird_001", "002.Bird_002"]
    random.seed(0)  # learn2learn samples with Python's random
    taskset = l2l_taskset(dataset, ways=5, shots=1, queries=2, num_tasks=10)
    first = [taskset[i] for i in range(10)]
    for x, y in first:
        assert x.shape == (15, 3, 4, 4)
        assert sorted(torch.bincount(torch.as_tensor(y)).tolist()) == [3] * 5
    random.seed(0)  # same seed, same access order -> same tasks
    again = l2l_taskset(dataset, ways=5, shots=1, queries=2, num_tasks=10)
    assert all(torch.equal(again[i][0], first[i][0]) for i in range(10))


def test_split_images_feed_the_sampler(tmp_path):
    root = fake.omniglot_tree(tmp_path / "omniglot", characters=1, drawings=20)
    data = omniglot.build_splits(root, tmp_path / "omni.json", protocol="alphabet", val_alphabets=0,
                                 rotations=[0, 90])
    images, sizes = split_images(data, root, "test", side=4)
    assert images.shape == (20 * 2 * 20, 1, 4, 4) and sizes == [20] * 40
    # class 1 is class 0 rotated by 90 degrees
    assert torch.equal(images[20:40], torch.rot90(images[:20], 1, dims=(-2, -1)))
    sampler = EpisodeSampler(images, sizes)
    sx, *_ = sampler.sample(4, ways=5, shots=1, queries=15, generator=torch.Generator().manual_seed(0))
    assert sx.shape == (4, 5, 1, 4, 4) and sx.dtype == torch.uint8


def test_split_images_mini_imagenet_pickle(tmp_path):
    root = fake.mini_imagenet_pickles(tmp_path / "mini", per_class=3, side=84)
    data = mini_imagenet.build_splits(root, tmp_path / "mini.json")
    images, sizes = split_images(data, root, "val")
    assert images.shape == (16 * 3, 3, 84, 84) and sizes == [3] * 16
    import pickle

    raw = pickle.load(open(root / "mini-imagenet-cache-validation.pkl", "rb"))
    first = data["splits"]["val"]["classes"][0]
    assert np.array_equal(images[0].permute(1, 2, 0).numpy(), raw["image_data"][raw["class_dict"][first][0]])


def test_split_images_tiered_imagenet_png_pickles(tmp_path):
    """Rows of the PNG pickle are matched to classes through label_specific / label_specific_str."""
    import io
    import pickle

    from PIL import Image

    root = fake.tiered_imagenet_labels(tmp_path / "tiered" / "tiered-imagenet", per_class=2)
    labels = pickle.load(open(root / "val_labels.pkl", "rb"))
    encoded = []
    for label in labels["label_specific"]:  # every image is filled with its label index
        buffer = io.BytesIO()
        Image.fromarray(np.full((84, 84, 3), int(label), np.uint8)).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    pickle.dump(encoded, open(root / "val_images_png.pkl", "wb"))
    data = tiered_imagenet.build_splits(tmp_path / "tiered", tmp_path / "tiered.json")
    images, sizes = split_images(data, tmp_path / "tiered", "val")
    assert images.shape == (97 * 2, 3, 84, 84) and sizes == [2] * 97
    want = [labels["label_specific_str"].index(c) for c in data["splits"]["val"]["classes"] for _ in range(2)]
    assert images[:, 0, 0, 0].tolist() == want
