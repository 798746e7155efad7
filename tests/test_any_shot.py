"""Any-shot episodes (TOW's Table 3 and Figure 2): shots drawn per class or per episode, support sets of
different sizes stacked as a ragged TaskBatch, and every learner (and TOW's stage evaluations) taking each task
on its real support set."""
from __future__ import annotations

import pytest
import torch

from taskbal.data.fewshot_images import ClassPool, any_shot_batch, check_data, draw_shots
from taskbal.learners import MAML, ProtoNet, TaskBatch
from taskbal.models import build_model
from taskbal.weighting.tow.problem import evaluate_learner

SHOTS = {"low": 1, "high": 6, "per_class_probability": 0.5}


def test_shots_are_drawn_per_class_or_shared_with_the_given_probability():
    draws = [draw_shots(torch.Generator().manual_seed(i), 5, SHOTS) for i in range(2000)]
    shared = sum(bool((d == d[0]).all()) for d in draws) / len(draws)
    # shared: every episode that drew one number, plus per-class draws that happen to agree (6^-4 of them)
    assert 0.45 < shared < 0.55
    values = torch.cat(draws)
    assert values.min() == 1 and values.max() == 6
    shared_only = {**SHOTS, "per_class_probability": 0.0}
    never = [draw_shots(torch.Generator().manual_seed(i), 5, shared_only) for i in range(50)]
    assert all(bool((d == d[0]).all()) for d in never)


def test_episodes_cap_the_support_of_small_classes_and_batch_exactly():
    sizes = torch.tensor([30, 30, 8, 30, 30, 30])  # class 2 has 8 images: at most 8 − 3 support images
    pool = ClassPool(sizes, torch.zeros(6, dtype=torch.int64))
    images = torch.arange(int(sizes.sum()), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    drawn = [pool.draw_any_shot(torch.Generator().manual_seed(i), 4, {**SHOTS, "high": 20}, 3, False)
             for i in range(40)]
    assert sum(d[3] for d in drawn) > 0  # some episode drew class 2 with more than 5 shots
    for classes, rows, counts, _ in drawn:
        for c, cls in enumerate(classes.tolist()):
            support = rows[c, :20]
            assert (support[:counts[c]] >= 0).all() and (support[counts[c]:] == -1).all()
            assert counts[c] <= sizes[cls] - 3
    rows = torch.stack([d[1] for d in drawn[:3]])
    counts = torch.stack([d[2] for d in drawn[:3]])
    batch = any_shot_batch(images, rows, counts, high=20)
    assert batch.ragged and batch.support_counts.tolist() == counts.sum(1).tolist()
    assert batch.query_x.shape == (3, 4 * 3, 1, 2, 2)
    for i, task in enumerate(batch.chunks(1)):  # each task cut to its real support set, class by class
        assert task.support_x.shape[1] == int(counts[i].sum()) and not task.ragged
        assert task.support_y[0].tolist() == torch.arange(4).repeat_interleave(counts[i]).tolist()
        expected = rows[i, :, :20][rows[i, :, :20] >= 0].float() / 255
        torch.testing.assert_close(task.support_x[0, :, 0, 0, 0], expected)


def test_any_shot_settings_name_the_field():
    base = {"dataset": "mini_imagenet", "split_variant": "5way1shot", "ways": 5, "query": 15, "train_tasks": 10,
            "val_tasks": 2, "test_tasks": 2, "split_seed": 0}
    check_data({**base, "shots": SHOTS})
    with pytest.raises(ValueError, match="data.shots.high: expected an integer >= 3"):
        check_data({**base, "shots": {**SHOTS, "low": 3, "high": 2}})
    with pytest.raises(ValueError, match="data.shots.per_class_probability"):
        check_data({**base, "shots": {**SHOTS, "per_class_probability": 2}})
    with pytest.raises(ValueError, match="data.shots: an integer, or any-shot"):
        check_data({**base, "shots": {"low": 1}})


def ragged_batch(gen):
    """Three 3-way tasks with 3, 5 and 4 support images (padded to 5), 2 queries per class."""
    counts = torch.tensor([[1, 1, 1], [2, 2, 1], [1, 2, 1]])
    sizes = counts.sum(1)
    support_x = torch.zeros(3, int(sizes.max()), 1, 16, 16, dtype=torch.float64)
    support_y = torch.zeros(3, int(sizes.max()), dtype=torch.int64)
    for i in range(3):
        n = int(sizes[i])
        support_x[i, :n] = torch.randn(n, 1, 16, 16, generator=gen, dtype=torch.float64)
        support_y[i, :n] = torch.arange(3).repeat_interleave(counts[i])
        support_x[i, n:] = 7.0  # padding that must never be seen
    query_y = torch.arange(3).repeat_interleave(2).expand(3, -1)
    query_x = torch.randn(3, 6, 1, 16, 16, generator=gen, dtype=torch.float64)
    return TaskBatch(support_x, support_y, query_x, query_y, torch.zeros(3, 1, dtype=torch.float64), sizes)


@pytest.mark.parametrize("name", ["maml", "protonet"])
def test_learners_and_tow_take_each_task_on_its_real_support_set(name):
    """A ragged batch gives, task by task, what each task gives alone on its real support set: the meta-gradients,
    the metrics after adaptation and TOW's stage evaluation (losses, meta-gradients, Gauss–Newton diagonal)."""
    torch.manual_seed(3)
    model = build_model({"name": "conv4", "filters": 3, "bn_affine": False}, ((1, 16, 16), 3)).double()
    learner = (MAML(model, inner_steps=2, inner_lr=0.1, first_order=True, loss="cross_entropy") if name == "maml"
               else ProtoNet(model, distance="euclidean"))
    batch = ragged_batch(torch.Generator().manual_seed(4))
    losses, grads = learner.meta_gradients(batch)
    metrics = learner.evaluate_tasks(batch)
    flat = learner.flat_meta_parameters()
    stage = evaluate_learner(learner, batch, flat)
    for i, n in enumerate(batch.support_counts.tolist()):
        alone = TaskBatch(batch.support_x[i:i + 1, :n], batch.support_y[i:i + 1, :n], batch.query_x[i:i + 1],
                          batch.query_y[i:i + 1], batch.features[i:i + 1])
        loss, grad = learner.meta_gradients(alone)
        torch.testing.assert_close(losses[i:i + 1], loss)
        torch.testing.assert_close(grads[i:i + 1], grad)
        torch.testing.assert_close(metrics["accuracy"][i:i + 1], learner.evaluate_tasks(alone)["accuracy"])
        single = evaluate_learner(learner, alone, flat)
        torch.testing.assert_close(stage.losses[i:i + 1], single.losses)
        torch.testing.assert_close(stage.grads[i:i + 1], single.grads)
        torch.testing.assert_close(stage.curvature[i:i + 1], single.curvature)
    padded = TaskBatch(*batch.fields()[:5])  # the same tensors read as equal-size sets: the padding counts
    assert not torch.allclose(learner.meta_gradients(padded)[0], losses)
