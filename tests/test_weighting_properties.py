"""Properties every registered weighting must have, checked over the whole of REGISTRY.

The tests are parametrised over ``sorted(REGISTRY)``, so a newly registered weighting is covered
without touching this file. Inputs are the training loop's own: ``taskbal.train.Run`` on a tiny
sinusoid split (an 8-8 MLP, one MAML inner step, meta-batches of 4 tasks) supplies the losses,
meta-gradients, task ids, learner, outer optimiser and upcoming batches that the more demanding
methods (TOW, the improvement function, TR-MAML / DA-MAML) read. Synthetic gradients (random,
nearly collinear, nearly collinear with opposite signs, pairwise agreeing) replace the learner's
where the property is about the geometry of the gradients.

Properties:
  1. the direction is Σ_i w_i g_i with the reported weights (PCGrad: see ``assert_pcgrad_contract``);
  2. outputs are finite on random and on nearly collinear gradients;
  3. two instances built with the same seed give identical outputs over consecutive steps, whatever
     the global random state;
  4. a fresh instance loaded with ``load_state_dict(state_dict())`` (through torch.save, as a resume
     checkpoint) continues exactly as the original.
Every combine also checks the output contract of base.Combined and that the inputs are left unchanged.
"""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch

from conftest import small_experiment
from taskbal.train import Run, step_generator
from taskbal.weighting import REGISTRY, Combined, TaskGradients, build_weighting
from taskbal.weighting.base import FIELDS, Planning
from test_weighting_solvers import reference_pcgrad

NAMES = sorted(REGISTRY)
SEED = 3
META_BATCH = 4
ITERATIONS = 8  # the loop's length: TOW's upcoming batches are cut at the end
# The cheapest settings of the expensive method; every other weighting runs with its defaults.
# TOW's horizon 3 (not 2) so that a mid-window step uses non-uniform planned weights (with one iLQR
# iteration and no terminal cost only the last step of a window stays uniform).
# DA-MAML's p ascends by step_size·(m/k)·loss per batch: with its default 1e-3, this 320-task pool and
# meta-batches of 4, the first batch takes all of p and every later batch weighs 0 (a zero direction),
# which would leave its determinism and round-trip checks comparing zeros; 1e-5 keeps p inside the simplex.
OPTIONS = {"tow": {"horizon": 3, "iterations": 1}, "damaml": {"step_size": 1e-5}}
# Weightings whose state changes their next output: the round trip must be seen to matter for them.
STATEFUL = {"simol", "improvement", "tr_maml", "damaml", "tow"}
GRADIENT_KINDS = ("learner", "random", "agreeing", "collinear", "opposed")


# -- assertion helpers ----------------------------------------------------------------------------
def assert_valid_output(out: Combined, tasks: TaskGradients) -> None:
    """The shapes, dtypes and devices promised by base.Combined."""
    assert isinstance(out, Combined)
    k, d = tasks.grads.shape
    assert out.direction.shape == (d,), out.direction.shape
    assert out.weights.shape == (k,), out.weights.shape
    assert out.direction.dtype == tasks.grads.dtype and out.weights.dtype == tasks.grads.dtype
    assert out.direction.device == tasks.grads.device and out.weights.device == tasks.grads.device
    assert all(isinstance(key, str) for key in out.stats)


def assert_finite(out: Combined) -> None:
    assert torch.isfinite(out.direction).all(), out.direction
    assert torch.isfinite(out.weights).all(), out.weights
    bad = {key: value for key, value in out.stats.items() if not np.isfinite(float(value))}
    assert not bad, f"non-finite stats: {bad}"


def assert_weighted_sum(out: Combined, tasks: TaskGradients) -> None:
    """direction = Σ_i w_i g_i, to the rounding of the gradients' precision."""
    weights, grads = out.weights.double(), tasks.grads.double()
    expected = weights @ grads
    scale = float((weights.abs() @ grads.abs()).max()) or 1.0
    eps = torch.finfo(tasks.grads.dtype).eps
    torch.testing.assert_close(out.direction.double(), expected, rtol=100 * eps, atol=100 * eps * scale)


def assert_pcgrad_contract(out: Combined, tasks: TaskGradients, generator_state: torch.Tensor) -> None:
    """PCGrad reports the uniform 1/k it averages with, but its direction is the mean of the *projected*
    gradients g_i^PC, which is not Σ w_i g_i (nor any fixed reweighting) as soon as two gradients conflict.
    What it promises is Algorithm 1 of Yu et al. with the orders drawn from ``tasks.generator``: the
    literal loop of test_weighting_solvers, replaying the same generator; and, with no conflict, the mean."""
    k = tasks.num_tasks
    torch.testing.assert_close(out.weights, torch.full((k,), 1.0 / k, dtype=tasks.grads.dtype), rtol=0, atol=0)
    generator = torch.Generator()
    generator.set_state(generator_state)
    expected = reference_pcgrad(tasks.grads.double(), generator)
    scale = float(tasks.grads.double().abs().max()) or 1.0
    torch.testing.assert_close(out.direction.double(), expected, rtol=1e-5, atol=1e-6 * scale)
    if out.stats["pcgrad_conflicts"] == 0:
        assert_weighted_sum(out, tasks)


def assert_same_output(actual: Combined, expected: Combined, context: str = "") -> None:
    """Bit-identical direction, weights and stats."""
    torch.testing.assert_close(actual.direction, expected.direction, rtol=0, atol=0, msg=lambda m: f"{context}: {m}")
    torch.testing.assert_close(actual.weights, expected.weights, rtol=0, atol=0, msg=lambda m: f"{context}: {m}")
    assert actual.stats.keys() == expected.stats.keys(), context
    for key in expected.stats:
        a, b = float(actual.stats[key]), float(expected.stats[key])
        assert a == b or (np.isnan(a) and np.isnan(b)), f"{context}: stats[{key!r}] {a} != {b}"


# -- inputs ---------------------------------------------------------------------------------------
def synthetic_grads(kind: str, k: int, d: int, iteration: int, dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1000 + iteration)
    noise = torch.randn(k, d, generator=gen, dtype=torch.float64)
    if kind == "random":
        grads = noise
    elif kind == "agreeing":  # entries ≥ 0: every pair of gradients has ⟨g_i, g_j⟩ > 0
        grads = noise.abs()
    elif kind in ("collinear", "opposed"):  # one direction, varied lengths, 1e-6 relative noise
        base = torch.randn(d, generator=gen, dtype=torch.float64)
        lengths = 0.5 + torch.rand(k, generator=gen, dtype=torch.float64)
        if kind == "opposed":
            lengths = lengths * torch.tensor([(-1.0) ** i for i in range(k)], dtype=torch.float64)
        grads = lengths[:, None] * base + 1e-6 * noise
    else:
        raise ValueError(kind)
    return grads.to(dtype)


class Loop:
    """The training loop's inputs on a tiny sinusoid problem; the learner is stepped by the caller."""

    def __init__(self, split):
        experiment = small_experiment({"name": "mean"}, iterations=ITERATIONS)
        experiment["model"]["hidden"] = [8, 8]
        experiment["learner"]["inner_steps"] = 1
        experiment["outer"]["meta_batch"] = META_BATCH
        self.run = Run(experiment, SEED, split, torch.device("cpu"))

    def build(self, name: str):
        weighting = build_weighting(name, self.run.num_params, self.run.tasks.feature_dim, SEED,
                                    **OPTIONS.get(name, {}))
        if weighting.plans_ahead:
            weighting.attach(Planning(self.run.learner, self.run.optimizer, self.run.upcoming_batches))
        return weighting

    def tasks(self, iteration: int, kind: str = "learner") -> TaskGradients:
        indices, batch = self.run.training_batch(iteration)
        tasks = self.run.task_gradients(batch, iteration, indices)
        if kind != "learner":
            tasks.grads = synthetic_grads(kind, tasks.num_tasks, tasks.grads.shape[1], iteration, tasks.grads.dtype)
        return tasks

    def step(self, direction: torch.Tensor) -> None:
        self.run.apply_direction(direction)


def copy_of(tasks: TaskGradients) -> TaskGradients:
    """The same inputs with their own tensors and a fresh generator in the loop's seeding."""
    clone = lambda t: None if t is None else t.clone()
    return dataclasses.replace(tasks, losses=clone(tasks.losses), grads=clone(tasks.grads),
                               features=clone(tasks.features), params=clone(tasks.params),
                               task_ids=clone(tasks.task_ids),
                               generator=step_generator(SEED, tasks.iteration))


def combine(weighting, tasks: TaskGradients) -> Combined:
    """weighting.combine on the fields it declares in ``reads`` only (reading another raises), checking
    the output contract and that the inputs are left as they were."""
    before = {field: getattr(tasks, field).clone() for field in ("losses", "grads", "features", "params", "task_ids")
              if getattr(tasks, field) is not None}
    out = weighting.combine(tasks.only(weighting.reads))
    for field, value in before.items():
        assert torch.equal(getattr(tasks, field), value), f"{weighting.name}: combine modified tasks.{field}"
    assert_valid_output(out, tasks)
    return out


@pytest.fixture
def loop(small_split) -> Loop:
    return Loop(small_split)


# -- 1. the direction is the weighted sum of the task gradients ------------------------------------
@pytest.mark.parametrize("kind", ["learner", "random", "agreeing"])
@pytest.mark.parametrize("name", NAMES)
def test_direction_is_the_weighted_sum_of_the_task_gradients(loop, name, kind):
    weighting = loop.build(name)
    for iteration in range(3):
        tasks = loop.tasks(iteration, kind)
        generator_state = tasks.generator.get_state()
        out = combine(weighting, tasks)
        if name == "pcgrad":
            assert_pcgrad_contract(out, tasks, generator_state)
        else:
            assert_weighted_sum(out, tasks)
        loop.step(out.direction)


# -- 2. finite outputs ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["random", "collinear", "opposed"])
@pytest.mark.parametrize("name", NAMES)
def test_outputs_are_finite(loop, name, kind):
    weighting = loop.build(name)
    for iteration in range(3):
        out = combine(weighting, loop.tasks(iteration, kind))
        assert_finite(out)
        loop.step(out.direction)


# -- 3. determinism -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["learner", "random"])
@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_identical_outputs(loop, name, kind):
    """Two instances with the same seed, built and run under different global random states (every
    random draw of a weighting must come from its seed or ``tasks.generator``), agree bit for bit."""
    torch.manual_seed(11)
    np.random.seed(11)
    first = loop.build(name)
    torch.manual_seed(12)
    np.random.seed(12)
    second = loop.build(name)
    for iteration in range(5):
        tasks = loop.tasks(iteration, kind)
        torch.manual_seed(100 + iteration)
        out_first = combine(first, copy_of(tasks))
        torch.manual_seed(200 + iteration)
        np.random.seed(200 + iteration)
        out_second = combine(second, copy_of(tasks))
        assert_same_output(out_second, out_first, f"{name}, iteration {iteration}")
        loop.step(out_first.direction)


# -- 4. state_dict round trip ---------------------------------------------------------------------------
def round_trip(state: dict) -> dict:
    """Through torch.save / torch.load, as the training loop's resume checkpoint."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_continues_exactly(loop, name):
    original = loop.build(name)
    for iteration in range(4):  # TOW (horizon 3) plans at 0 and 3: the round trip falls mid-window
        loop.step(combine(original, loop.tasks(iteration)).direction)
    resumed = loop.build(name)
    resumed.load_state_dict(round_trip(original.state_dict()))
    unloaded = loop.build(name)
    for iteration in range(4, 7):  # the next step, the end of TOW's window and its next plan
        tasks = loop.tasks(iteration)
        out_resumed = combine(resumed, copy_of(tasks))
        out_original = combine(original, copy_of(tasks))
        assert_same_output(out_resumed, out_original, f"{name}, iteration {iteration}")
        if iteration == 4 and name in STATEFUL:
            # the check has teeth: without the state the next output would differ
            out_unloaded = combine(unloaded, copy_of(tasks))
            assert not torch.equal(out_unloaded.direction, out_original.direction), name
        loop.step(out_original.direction)


def test_a_weighting_sees_only_the_fields_it_declares(loop):
    """The loops hand a weighting ``tasks.only(reads)``: the declared fields (and ``num_tasks``, the batch's
    size), and an error naming any other field it reads."""
    view = loop.tasks(0).only(frozenset({"grads"}))
    assert view.num_tasks == META_BATCH and view.grads.shape[0] == META_BATCH
    with pytest.raises(AttributeError, match="losses"):
        _ = view.losses
    with pytest.raises(ValueError, match="learner"):
        loop.tasks(0).only(frozenset({"grads", "learner"}))
    assert all(REGISTRY[name].reads <= FIELDS for name in NAMES)
