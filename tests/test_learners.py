"""The learners (MAML with cross-entropy, Meta-SGD, CAVIA, Reptile, ProtoNet, the penalty hook) against
finite differences, learn2learn and straightforward one-task-at-a-time implementations."""
from __future__ import annotations

import copy

import learn2learn as l2l
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from taskbal.learners import CAVIA, MAML, REGISTRY, MetaSGD, ProtoNet, Reptile, TaskBatch, learner_for
from taskbal.learners.maml import jacobian_rows
from taskbal.models import MLP, build_model
from taskbal.options import check_options

DT = torch.float64


# -- tasks ----------------------------------------------------------------------------------------
def regression_tasks(k: int, shots: int, seed: int, queries: int | None = None) -> TaskBatch:
    g = torch.Generator().manual_seed(seed)
    amplitude = torch.rand(k, 1, 1, generator=g, dtype=DT) * 4.9 + 0.1
    phase = torch.rand(k, 1, 1, generator=g, dtype=DT) * torch.pi
    xs = torch.rand(k, shots, 1, generator=g, dtype=DT) * 10 - 5
    xq = torch.rand(k, queries or shots, 1, generator=g, dtype=DT) * 10 - 5
    return TaskBatch(xs, amplitude * torch.sin(xs + phase), xq, amplitude * torch.sin(xq + phase),
                     torch.zeros(k, 1, dtype=DT))


def classification_tasks(k: int, ways: int, shots: int, queries: int, seed: int, shape=(3,)) -> TaskBatch:
    """Each class of each task: a random mean plus noise, so tasks are learnable but not trivial."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, ways, *shape, generator=g, dtype=DT)

    def draw(per_class):
        labels = torch.arange(ways).repeat_interleave(per_class)
        x = means[:, labels] + torch.randn(k, len(labels), *shape, generator=g, dtype=DT)
        return x, labels.expand(k, -1).clone()

    (xs, ys), (xq, yq) = draw(shots), draw(queries)
    return TaskBatch(xs, ys, xq, yq, torch.zeros(k, 1, dtype=DT))


def assert_per_task_finite_differences(learner, batch: TaskBatch, seed: int = 0, direction=None, eps: float = 1e-6):
    """Row i of the meta-gradient, along a random direction, equals the central difference of task i's
    post-adaptation query loss."""
    losses, grads = learner.meta_gradients(batch)
    flat = learner.flat_meta_parameters()
    if direction is None:
        direction = torch.randn(flat.shape, generator=torch.Generator().manual_seed(seed), dtype=DT)
    plus = learner.adapted_query_losses(batch, flat + eps * direction)
    minus = learner.adapted_query_losses(batch, flat - eps * direction)
    torch.testing.assert_close(grads @ direction, (plus - minus) / (2 * eps), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(losses, learner.adapted_query_losses(batch))
    assert (grads @ direction).abs().max() > 1e-4  # a real signal, not 0 == 0
    return grads


def ce(logits, labels):
    return F.cross_entropy(logits, labels)


# -- MAML with cross-entropy ------------------------------------------------------------------------
@pytest.mark.parametrize("inner_optimizer", ["sgd", "adam"])
def test_maml_cross_entropy_meta_gradient_matches_finite_differences(inner_optimizer):
    torch.manual_seed(0)
    model = MLP(3, [6], 4).double()
    batch = classification_tasks(3, ways=4, shots=2, queries=3, seed=1)
    learner = MAML(model, inner_steps=2, inner_lr=0.3, loss="cross_entropy", inner_optimizer=inner_optimizer)
    assert_per_task_finite_differences(learner, batch)


@pytest.mark.parametrize("first_order", [False, True])
def test_maml_conv4_equals_learn2learn_maml(first_order):
    torch.manual_seed(1)
    model = build_model({"name": "conv4", "filters": 4}, ((3, 16, 16), 5)).double()
    batch = classification_tasks(2, ways=5, shots=1, queries=2, seed=2, shape=(3, 16, 16))
    ours = MAML(model, inner_steps=2, inner_lr=0.1, first_order=first_order, loss="cross_entropy")
    losses, grads = ours.meta_gradients(batch)
    maml = l2l.algorithms.MAML(model, lr=0.1, first_order=first_order)
    reference, reference_losses = [], []
    for i in range(batch.num_tasks):
        learner = maml.clone()
        for _ in range(2):
            learner.adapt(ce(learner(batch.support_x[i]), batch.support_y[i]))
        query_loss = ce(learner(batch.query_x[i]), batch.query_y[i])
        reference_losses.append(query_loss.detach())
        reference.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(query_loss, list(model.parameters()))]))
    torch.testing.assert_close(losses, torch.stack(reference_losses))
    torch.testing.assert_close(grads, torch.stack(reference), rtol=1e-7, atol=1e-9)


def test_conv4_hand_batched_and_vmap_paths_give_the_same_meta_gradients():
    torch.manual_seed(17)
    model = build_model({"name": "conv4", "filters": 3, "context": 2}, ((1, 16, 16), 3)).double()
    batch = classification_tasks(2, ways=3, shots=1, queries=2, seed=25, shape=(1, 16, 16))
    for make in (lambda: MAML(model, inner_steps=2, inner_lr=0.1, loss="cross_entropy"),
                 lambda: CAVIA(model, inner_steps=2, inner_lr=0.5, loss="cross_entropy")):
        fast, generic = make(), make()
        generic._batched_forward = torch.func.vmap(generic._forward_one_task)
        if isinstance(generic, CAVIA):
            generic._context_forward = torch.func.vmap(generic._forward_one_task_with_context)
        torch.testing.assert_close(fast.meta_gradients(batch), generic.meta_gradients(batch))


def test_inner_adam_equals_torch_adam():
    """The differentiable foreach Adam of the inner loop takes torch.optim.Adam's steps."""
    torch.manual_seed(2)
    model = MLP(1, [8], 1).double()
    batch = regression_tasks(3, 5, seed=3)
    learner = MAML(model, inner_steps=3, inner_lr=0.05, inner_optimizer="adam")
    copies = learner.per_task_copies(learner.meta_parameters(), 3)
    adapted = learner.adapt(copies, batch.support_x, batch.support_y, create_graph=False)
    for i in range(3):
        clone = copy.deepcopy(model)
        optimiser = torch.optim.Adam(clone.parameters(), lr=0.05)
        for _ in range(3):
            optimiser.zero_grad()
            F.mse_loss(clone(batch.support_x[i]), batch.support_y[i]).backward()
            optimiser.step()
        for name, value in clone.named_parameters():
            torch.testing.assert_close(adapted[name][i], value.detach(), rtol=0, atol=1e-12)


# -- Meta-SGD --------------------------------------------------------------------------------------------
def test_metasgd_meta_gradient_matches_finite_differences_including_rates():
    torch.manual_seed(3)
    model = MLP(1, [8], 1).double()
    batch = regression_tasks(3, 4, seed=4)
    learner = MetaSGD(model, inner_steps=2, inner_lr=0.05, inner_lr_range=[0.02, 0.1])
    network_size = sum(p.numel() for p in model.parameters())
    assert learner.flat_meta_parameters().numel() == 2 * network_size
    assert_per_task_finite_differences(learner, batch, seed=5)
    # Along the rates alone: dL_i/dα.
    direction = torch.randn(2 * network_size, generator=torch.Generator().manual_seed(6), dtype=DT)
    direction[:network_size] = 0
    assert_per_task_finite_differences(learner, batch, direction=direction)


@pytest.mark.parametrize("first_order", [False, True])
def test_metasgd_equals_learn2learn_metasgd(first_order):
    torch.manual_seed(4)
    model = MLP(1, [16, 16], 1).double()
    batch = regression_tasks(4, 5, seed=7)
    ours = MetaSGD(model, inner_steps=2, inner_lr=0.05, first_order=first_order)
    losses, grads = ours.meta_gradients(batch)
    meta = l2l.algorithms.MetaSGD(model, lr=0.05, first_order=first_order)
    reference = []
    for i in range(batch.num_tasks):
        learner = meta.clone()
        for _ in range(2):
            learner.adapt(F.mse_loss(learner(batch.support_x[i]), batch.support_y[i]))
        query_loss = F.mse_loss(learner(batch.query_x[i]), batch.query_y[i])
        reference.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(query_loss, list(meta.parameters()))]))
    torch.testing.assert_close(grads, torch.stack(reference), rtol=1e-7, atol=1e-9)
    assert grads[:, -sum(p.numel() for p in model.parameters()):].abs().max() > 1e-3  # rates do get gradients


def test_metasgd_parameters_state_and_outer_step():
    torch.manual_seed(5)
    model = MLP(1, [4], 1).double()
    learner = MetaSGD(model, inner_steps=1, inner_lr=0.1)
    flat = learner.flat_meta_parameters()
    for param, (_name, view) in zip(learner.parameters(), learner.unflatten(flat).items()):
        torch.testing.assert_close(param.detach(), view)
    state = copy.deepcopy(learner.state_dict())
    _, grads = learner.meta_gradients(regression_tasks(2, 5, seed=8))
    optimiser = torch.optim.SGD(learner.parameters(), lr=0.1)
    for param, grad in zip(learner.parameters(), learner.unflatten(grads.mean(0)).values()):
        param.grad = grad.clone()
    optimiser.step()
    assert not torch.allclose(learner.rates[0].detach(), torch.full_like(learner.rates[0], 0.1))
    learner.load_state_dict(state)
    torch.testing.assert_close(learner.flat_meta_parameters(), flat)


# -- CAVIA ------------------------------------------------------------------------------------------------
def test_cavia_mlp_equals_a_per_task_implementation_and_finite_differences():
    torch.manual_seed(6)
    model = build_model({"hidden": [8, 8], "context": 2}, (1, 1)).double()
    batch = regression_tasks(3, 5, seed=9)
    learner = CAVIA(model, inner_steps=2, inner_lr=0.5)
    losses, grads = learner.meta_gradients(batch)
    assert grads.shape == (3, sum(p.numel() for p in model.parameters()))  # θ only
    reference = []
    for i in range(3):
        context = torch.zeros(2, dtype=DT, requires_grad=True)
        for _ in range(2):
            support_loss = F.mse_loss(model(batch.support_x[i], context), batch.support_y[i])
            context = context - 0.5 * torch.autograd.grad(support_loss, context, create_graph=True)[0]
        query_loss = F.mse_loss(model(batch.query_x[i], context), batch.query_y[i])
        torch.testing.assert_close(losses[i], query_loss.detach())
        reference.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(query_loss, list(model.parameters()))]))
    torch.testing.assert_close(grads, torch.stack(reference))
    assert_per_task_finite_differences(learner, batch, seed=10)


def test_cavia_film_conv4_meta_gradient_matches_finite_differences():
    torch.manual_seed(7)
    model = build_model({"name": "conv4", "filters": 3, "context": 2}, ((1, 16, 16), 3)).double()
    batch = classification_tasks(2, ways=3, shots=1, queries=1, seed=11, shape=(1, 16, 16))
    learner = CAVIA(model, inner_steps=2, inner_lr=0.5, loss="cross_entropy", num_context=2)
    assert_per_task_finite_differences(learner, batch, seed=12)


# -- Reptile ---------------------------------------------------------------------------------------------
def reptile_by_definition(model, x, y, steps, lr, optimiser="sgd"):
    """Nichol et al.: SGD (or Adam) steps from θ on one task, one task at a time; returns θ − φ."""
    clone = copy.deepcopy(model)
    step = (torch.optim.SGD if optimiser == "sgd" else torch.optim.Adam)(clone.parameters(), lr=lr)
    for _ in range(steps):
        step.zero_grad()
        F.mse_loss(clone(x), y).backward()
        step.step()
    return torch.cat([(p - q).detach().reshape(-1) for p, q in zip(model.parameters(), clone.parameters())]), clone


@pytest.mark.parametrize("options", [
    {},
    {"difference_scale": 1.0},
    {"inner_data": "support_and_query"},
    {"inner_optimizer": "adam"},
])
def test_reptile_equals_its_definition(options):
    torch.manual_seed(8)
    model = MLP(1, [8, 8], 1).double()
    batch = regression_tasks(3, 5, seed=13)
    learner = Reptile(model, inner_steps=3, inner_lr=0.02, **options)
    losses, grads = learner.meta_gradients(batch)
    scale = options.get("difference_scale", 0.02 * 3)
    for i in range(3):
        x, y = batch.support_x[i], batch.support_y[i]
        if options.get("inner_data") == "support_and_query":
            x, y = torch.cat([x, batch.query_x[i]]), torch.cat([y, batch.query_y[i]])
        difference, adapted = reptile_by_definition(model, x, y, 3, 0.02, options.get("inner_optimizer", "sgd"))
        torch.testing.assert_close(grads[i], difference / scale, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(losses[i], F.mse_loss(adapted(batch.query_x[i]), batch.query_y[i]).detach())


# -- ProtoNet --------------------------------------------------------------------------------------------
def protonet_setup(seed: int):
    torch.manual_seed(seed)
    model = build_model({"name": "conv4", "filters": 3}, ((1, 16, 16), 3)).double()
    batch = classification_tasks(2, ways=3, shots=2, queries=2, seed=seed + 100, shape=(1, 16, 16))
    return model, batch


def per_task_protonet_gradients(model, batch, classify):
    """One task at a time: embed the episode, prototypes by a loop over classes, ``classify`` → logits."""
    losses, grads = [], []
    n_support = batch.support_x.shape[1]
    for i in range(batch.num_tasks):
        embedded = model.embedding(torch.cat([batch.support_x[i], batch.query_x[i]]))
        support, query = embedded[:n_support], embedded[n_support:]
        logits = classify(support, batch.support_y[i], query)
        loss = ce(logits, batch.query_y[i])
        losses.append(loss.detach())
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.embedding.parameters()))]))
    return torch.stack(losses), torch.stack(grads)


def straightforward_logits(support, labels, query, squared=True):
    prototypes = torch.stack([support[labels == c].mean(0) for c in range(int(labels.max()) + 1)])
    distances = torch.stack([((q - prototypes) ** 2).sum(1) for q in query])
    return -distances if squared else -distances.sqrt()


@pytest.mark.parametrize("distance", ["squared_euclidean", "euclidean"])
def test_protonet_equals_a_straightforward_implementation(distance):
    model, batch = protonet_setup(9)
    learner = ProtoNet(model, distance=distance)
    losses, grads = learner.meta_gradients(batch)
    assert grads.shape[1] == sum(p.numel() for p in model.embedding.parameters())  # no head
    reference_losses, reference = per_task_protonet_gradients(
        model, batch, lambda s, y, q: straightforward_logits(s, y, q, squared=distance == "squared_euclidean"))
    torch.testing.assert_close(losses, reference_losses)
    torch.testing.assert_close(grads, reference)


def test_protonet_equals_learn2learn_prototypical_classifier():
    model, batch = protonet_setup(10)
    losses, grads = ProtoNet(model).meta_gradients(batch)
    reference_losses, reference = per_task_protonet_gradients(
        model, batch, lambda s, y, q: l2l.nn.PrototypicalClassifier(s, y)(q))
    torch.testing.assert_close(losses, reference_losses)
    torch.testing.assert_close(grads, reference)


def test_protonet_gradient_matches_finite_differences_and_evaluates_accuracy():
    model, batch = protonet_setup(11)
    learner = ProtoNet(model)
    assert_per_task_finite_differences(learner, batch, seed=14)
    metrics = learner.evaluate_tasks(batch)
    logits = learner.query_outputs({n: p.expand(2, *p.shape) for n, p in learner.meta_parameters().items()}, batch)
    torch.testing.assert_close(metrics["accuracy"], (logits.argmax(-1) == batch.query_y).double().mean(1))


# -- the Nash-GBML penalty hook ---------------------------------------------------------------------------
class QuadraticPenalty:
    """p_i = (c/2) ‖φ_i − anchor‖² over all tensors: pulls each task towards θ (no coupling)."""

    def __init__(self, c: float):
        self.c, self.calls = c, []

    def __call__(self, anchor, task_params, step):
        self.calls.append((step, {n: a.detach().clone() for n, a in anchor.items()}))
        return sum(0.5 * self.c * (task_params[n] - anchor[n]).pow(2).flatten(1).sum(1) for n in anchor)


class CentroidPenalty:
    """p_i = (c/2) ‖anchor − mean_j φ_j‖² for every task: couples the tasks as Nash-GBML's p_C does."""

    def __init__(self, c: float):
        self.c = c

    def __call__(self, anchor, task_params, step):
        k = next(iter(task_params.values())).shape[0]
        value = sum(0.5 * self.c * (anchor[n] - task_params[n].mean(0)).pow(2).sum() for n in anchor)
        return value.expand(k)


def loss_gradient(model, params, x, y):
    params = {n: p.detach().requires_grad_() for n, p in params.items()}
    loss = F.mse_loss(functional_call(model, params, (x,)), y)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def test_quadratic_penalty_adds_its_pull_to_the_inner_steps():
    torch.manual_seed(12)
    model = MLP(1, [6], 1).double()
    batch = regression_tasks(3, 5, seed=15)
    learner = MAML(model, inner_steps=2, inner_lr=0.1)
    learner.penalty = penalty = QuadraticPenalty(c=3.0)
    copies = learner.per_task_copies(learner.meta_parameters(), 3)
    adapted = learner.adapt(copies, batch.support_x, batch.support_y, create_graph=False)
    theta = {n: p.detach() for n, p in model.named_parameters()}
    assert [step for step, _ in penalty.calls] == [0, 1]
    for _, anchor in penalty.calls:
        for name in theta:
            torch.testing.assert_close(anchor[name], theta[name])
    for i in range(3):  # φ1 = θ − α∇L(θ) (the pull is 0 at θ); φ2 = φ1 − α(∇L(φ1) + c(φ1 − θ))
        x, y = batch.support_x[i], batch.support_y[i]
        g0 = loss_gradient(model, theta, x, y)
        phi1 = {n: theta[n] - 0.1 * g0[n] for n in theta}
        g1 = loss_gradient(model, phi1, x, y)
        for name in theta:
            phi2 = phi1[name] - 0.1 * (g1[name] + 3.0 * (phi1[name] - theta[name]))
            torch.testing.assert_close(adapted[name][i], phi2)
    # The pull changes the result (the test can fail).
    learner.penalty = None
    plain = learner.adapt(learner.per_task_copies(learner.meta_parameters(), 3), batch.support_x, batch.support_y,
                          create_graph=False)
    assert (plain["0.weight"] - adapted["0.weight"]).abs().max() > 1e-4


@pytest.mark.parametrize("learner_class", [MAML, MetaSGD])
def test_coupling_penalty_gives_per_task_meta_gradients(learner_class):
    torch.manual_seed(13)
    model = MLP(1, [6], 1).double()
    batch = regression_tasks(3, 4, seed=16)
    learner = learner_class(model, inner_steps=3, inner_lr=0.1)
    learner.penalty = CentroidPenalty(c=2.0)
    grads = assert_per_task_finite_differences(learner, batch, seed=17)
    # penalty_gradients: per_copy differentiates each task's own copy: the rows miss the paths through
    # the other tasks, but they sum to the same total gradient.
    fast = learner_class(model, inner_steps=3, inner_lr=0.1, penalty_gradients="per_copy")
    fast.penalty = CentroidPenalty(c=2.0)
    per_copy = fast.meta_gradients(batch)[1]
    torch.testing.assert_close(per_copy.sum(0), grads.sum(0))
    assert (per_copy - grads).abs().max() > 1e-4


def test_cavia_penalty_anchor_is_the_initial_context():
    torch.manual_seed(14)
    model = build_model({"hidden": [6], "context": 2}, (1, 1)).double()
    batch = regression_tasks(2, 5, seed=18)
    learner = CAVIA(model, inner_steps=2, inner_lr=0.5)
    learner.penalty = penalty = QuadraticPenalty(c=4.0)
    adapted = learner.adapt(learner.per_task_copies(learner.meta_parameters(), 2), batch.support_x, batch.support_y,
                            create_graph=False)
    assert set(penalty.calls[0][1]) == {"context"}
    torch.testing.assert_close(penalty.calls[0][1]["context"], torch.zeros(2, dtype=DT))
    for i in range(2):  # φ1 = −α∇L(0); φ2 = φ1 − α(∇L(φ1) + c φ1)
        def grad_at(context):
            context = context.detach().requires_grad_()
            loss = F.mse_loss(model(batch.support_x[i], context), batch.support_y[i])
            return torch.autograd.grad(loss, context)[0]
        phi1 = -0.5 * grad_at(torch.zeros(2, dtype=DT))
        phi2 = phi1 - 0.5 * (grad_at(phi1) + 4.0 * phi1)
        torch.testing.assert_close(adapted["context"][i], phi2)
    learner.penalty = CentroidPenalty(c=1.0)
    assert_per_task_finite_differences(learner, regression_tasks(3, 4, seed=19), seed=20)


def test_evaluate_with_penalty_false_adapts_without_it():
    torch.manual_seed(15)
    model = MLP(1, [6], 1).double()
    batch = regression_tasks(3, 5, seed=21)
    plain = MAML(model, inner_steps=2, inner_lr=0.1).evaluate_tasks(batch)
    learner = MAML(model, inner_steps=2, inner_lr=0.1, evaluate_with_penalty=False)
    learner.penalty = QuadraticPenalty(c=5.0)
    torch.testing.assert_close(learner.evaluate_tasks(batch), plain)
    learner.evaluate_with_penalty = True
    assert not torch.allclose(learner.evaluate_tasks(batch)["loss"], plain["loss"])


def test_jacobian_rows_batched_equals_one_backward_per_task():
    w = torch.randn(4, 3, dtype=DT, requires_grad=True)
    x = torch.randn(5, 3, dtype=DT)
    losses = torch.tanh(x @ w.T).pow(2).sum(0)  # [4]
    batched = jacobian_rows(losses, [w])[0]
    looped = jacobian_rows(losses, [w], batched=False)[0]
    torch.testing.assert_close(batched, looped)
    torch.testing.assert_close(batched, torch.autograd.functional.jacobian(
        lambda v: torch.tanh(x @ v.T).pow(2).sum(0), w.detach()))


@pytest.mark.parametrize("name", ["maml", "metasgd", "cavia", "reptile", "protonet"])
def test_task_chunks_give_the_same_results(name):
    torch.manual_seed(18)
    if name == "protonet":
        model, batch = build_model({"name": "conv4", "filters": 2}, ((1, 16, 16), 3)).double(), \
            classification_tasks(5, ways=3, shots=1, queries=2, seed=26, shape=(1, 16, 16))
        options = {}
    else:
        model = build_model({"hidden": [6], "context": 2 if name == "cavia" else 0}, (1, 1)).double()
        batch, options = regression_tasks(5, 4, seed=26), {"inner_steps": 2, "inner_lr": 0.1}
    whole = REGISTRY[name](model, **options)
    chunked = REGISTRY[name](model, task_chunk=2, **options)
    torch.testing.assert_close(chunked.meta_gradients(batch), whole.meta_gradients(batch))
    torch.testing.assert_close(chunked.evaluate_tasks(batch), whole.evaluate_tasks(batch))
    flat = whole.flat_meta_parameters() * 1.01
    torch.testing.assert_close(chunked.adapted_query_losses(batch, flat), whole.adapted_query_losses(batch, flat))


def conv_and_mlp(kind: str):
    """A small conv4 or MLP learner setting (float64) for the automatic task chunking."""
    if kind == "conv4":
        model = build_model({"name": "conv4", "filters": 3}, ((1, 16, 16), 3)).double()
        batch = classification_tasks(4, ways=3, shots=1, queries=2, seed=31, shape=(1, 16, 16))
        return model, batch, {"inner_steps": 2, "inner_lr": 0.1, "loss": "cross_entropy"}
    return MLP(1, [6], 1).double(), regression_tasks(4, 4, seed=32), {"inner_steps": 2, "inner_lr": 0.1}


@pytest.mark.parametrize("kind", ["conv4", "mlp"])
def test_automatic_task_chunk_gives_the_results_of_every_explicit_chunking(kind):
    torch.manual_seed(30)
    model, batch, options = conv_and_mlp(kind)
    auto = MAML(model, **options)
    assert auto.auto_task_chunk and auto.task_chunk is None
    flat = auto.flat_meta_parameters() * 1.01
    for explicit in (None, 1):
        other = MAML(model, task_chunk=explicit, **options)
        torch.testing.assert_close(auto.meta_gradients(batch), other.meta_gradients(batch))
        torch.testing.assert_close(auto.evaluate_tasks(batch), other.evaluate_tasks(batch))
        torch.testing.assert_close(auto.adapted_query_losses(batch, flat), other.adapted_query_losses(batch, flat))


def test_automatic_task_chunk_resolves_per_model_and_device():
    from types import SimpleNamespace

    conv, conv_batch, conv_options = conv_and_mlp("conv4")
    mlp, mlp_batch, mlp_options = conv_and_mlp("mlp")
    on_cuda = SimpleNamespace(support_x=SimpleNamespace(device=torch.device("cuda")), ragged=False)
    assert MAML(conv, **conv_options).chunk_size(conv_batch) == 1  # conv net on the CPU: one task per graph
    assert ProtoNet(conv).chunk_size(conv_batch) == 1
    assert MAML(conv, **conv_options).chunk_size(on_cuda) is None  # on CUDA: the whole meta-batch
    assert MAML(mlp, **mlp_options).chunk_size(mlp_batch) is None  # MLP: the whole meta-batch
    assert CAVIA(build_model({"hidden": [4], "context": 2}, (1, 1)).double()).chunk_size(mlp_batch) is None
    for explicit in (None, 1, 3):  # an explicit setting keeps its meaning everywhere
        for model, batch in ((conv, conv_batch), (mlp, mlp_batch), (conv, on_cuda)):
            assert MAML(model, task_chunk=explicit).chunk_size(batch) == explicit
    penalty = {"name": "centroid", "weight": 0.1, "num_tasks_total": 4, "inner_lr": 0.1}
    assert MAML(conv, penalty=penalty, **conv_options).chunk_size(conv_batch) is None


def test_penalty_with_the_automatic_task_chunk_uses_the_whole_meta_batch():
    torch.manual_seed(33)
    model, batch, options = conv_and_mlp("conv4")
    penalty = {"name": "centroid", "weight": 0.5, "num_tasks_total": 4, "inner_lr": 0.1}
    auto = MAML(model, penalty=penalty, **options)
    whole = MAML(model, penalty=penalty, task_chunk=None, **options)
    torch.testing.assert_close(auto.meta_gradients(batch), whole.meta_gradients(batch))
    torch.testing.assert_close(auto.evaluate_tasks(batch), whole.evaluate_tasks(batch))
    # the penalty couples the tasks: one task per graph would give other numbers
    uncoupled = MAML(model, task_chunk=1, **options).meta_gradients(batch)[1]
    assert not torch.allclose(auto.meta_gradients(batch)[1], uncoupled)
    late = MAML(model, **options)  # a penalty attached after construction (as the benchmarks do)
    late.penalty = auto.penalty
    assert late.chunk_size(batch) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_automatic_task_chunk_on_cuda_matches_the_cpu():
    torch.manual_seed(34)
    model, batch, options = conv_and_mlp("conv4")
    cpu = MAML(model, **options).meta_gradients(batch)
    learner = MAML(copy.deepcopy(model).cuda(), **options)
    assert learner.chunk_size(batch.to(torch.device("cuda"))) is None
    torch.testing.assert_close(tuple(t.cpu() for t in learner.meta_gradients(batch.to(torch.device("cuda")))), cpu)


def test_conv4_max_pool_is_max_pool2d_bit_for_bit():
    from taskbal.models.conv4 import max_pool_2x2

    torch.manual_seed(35)
    x = torch.randn(3, 4, 9, 10, dtype=DT)
    x[0, 0, :4, :4] = 0.5  # ties: the first maximum of a window wins, as in F.max_pool2d
    x[1, 1, 2:6, 2:6] = torch.tensor([1.0, 2.0]).repeat(8)[:16].view(4, 4)
    weight = torch.randn(3, 4, 4, 5, dtype=DT, requires_grad=True)
    results = []
    for pool in (lambda h: F.max_pool2d(h, 2), max_pool_2x2):
        h = x.clone().requires_grad_()
        out = pool(h)
        grad, = torch.autograd.grad((out * weight).sum(), h, create_graph=True)
        second, = torch.autograd.grad((grad * torch.cos(x)).sum(), weight)  # through the backward (double backward)
        results.append((out, grad, second))
    for ours, reference in zip(*results):
        assert torch.equal(ours, reference)


# -- evaluate_tasks ---------------------------------------------------------------------------------------
def test_evaluate_tasks_accuracy_and_loss_by_hand():
    torch.manual_seed(16)
    model = MLP(3, [5], 4).double()
    batch = classification_tasks(6, ways=4, shots=2, queries=5, seed=22)
    metrics = MAML(model, inner_steps=1, inner_lr=0.5, loss="cross_entropy").evaluate_tasks(batch)
    w1, b1, w2, b2 = (p.detach() for p in model.parameters())
    for i in range(6):
        params = [t.clone().requires_grad_() for t in (w1, b1, w2, b2)]

        def logits(p, x):
            return torch.relu(x @ p[0].T + p[1]) @ p[2].T + p[3]

        support = logits(params, batch.support_x[i])
        support_loss = (torch.logsumexp(support, 1) - support[range(8), batch.support_y[i]]).mean()
        adapted = [p - 0.5 * g for p, g in zip(params, torch.autograd.grad(support_loss, params))]
        query = logits(adapted, batch.query_x[i]).detach()
        correct = sum(int(query[j].argmax() == batch.query_y[i, j]) for j in range(20))
        assert metrics["accuracy"][i].item() == pytest.approx(correct / 20, abs=1e-12)
        by_hand = (torch.logsumexp(query, 1) - query[range(20), batch.query_y[i]]).mean()
        assert metrics["loss"][i].item() == pytest.approx(by_hand.item(), rel=1e-10)
    assert set(metrics) == {"loss", "accuracy"}
    assert 0 < metrics["accuracy"].mean() < 1


def test_regression_metrics_are_loss_and_mse():
    model = MLP(1, [4], 1).double()
    metrics = MAML(model, inner_steps=1).evaluate_tasks(regression_tasks(2, 5, seed=23))
    assert set(metrics) == {"loss", "mse"}
    torch.testing.assert_close(metrics["loss"], metrics["mse"])


# -- options and registry --------------------------------------------------------------------------------
def test_every_learner_is_registered_and_buildable_from_a_config():
    experiment = {"learner": {"name": "maml", "inner_steps": 1}}
    models = {"maml": MLP(1, [4], 1), "metasgd": MLP(1, [4], 1), "reptile": MLP(1, [4], 1),
              "cavia": build_model({"hidden": [4], "context": 2}, (1, 1)),
              "protonet": build_model({"name": "conv4", "filters": 2}, ((1, 16, 16), 3))}
    assert set(REGISTRY) == set(models)
    for name, model in models.items():
        experiment["learner"] = {"name": name}
        assert isinstance(learner_for(experiment, model), REGISTRY[name])
        check_options("learner", REGISTRY[name], {}, 1)
        with pytest.raises(ValueError, match=r"learner\.bogus"):
            check_options("learner", REGISTRY[name], {"bogus": 1}, 1)


@pytest.mark.parametrize("build, field", [
    (lambda: MAML(MLP(1, [4], 1), loss="hinge"), "learner.loss"),
    (lambda: MAML(MLP(1, [4], 1), inner_lr=-1), "learner.inner_lr"),
    (lambda: MAML(MLP(1, [4], 1), inner_steps=-2), "learner.inner_steps"),
    (lambda: MAML(MLP(1, [4], 1), penalty="centroid"), "learner.penalty"),
    (lambda: MAML(MLP(1, [4], 1), adam_betas=(0.9, 1.5)), "learner.adam_betas"),
    (lambda: MAML(MLP(1, [4], 1), penalty_gradients="exact"), "learner.penalty_gradients"),
    (lambda: MAML(MLP(1, [4], 1), task_chunk=0), "learner.task_chunk"),
    (lambda: MAML(MLP(1, [4], 1), task_chunk="automatic"), "learner.task_chunk"),
    (lambda: MAML(MLP(1, [4], 1), task_chunk=2, penalty={"name": "centroid"}), "learner.task_chunk"),
    (lambda: MetaSGD(MLP(1, [4], 1), inner_optimizer="adam"), "learner.inner_optimizer"),
    (lambda: MetaSGD(MLP(1, [4], 1), inner_lr_range=[0.1, 0.01]), "learner.inner_lr_range"),
    (lambda: CAVIA(MLP(1, [4], 1)), "model.context"),
    (lambda: CAVIA(MLP(1, [4], 1, context=3), num_context=4), "learner.num_context"),
    (lambda: Reptile(MLP(1, [4], 1), difference_scale=0), "learner.difference_scale"),
    (lambda: Reptile(MLP(1, [4], 1), inner_data="query"), "learner.inner_data"),
    (lambda: Reptile(MLP(1, [4], 1), inner_steps=0), "learner.inner_steps"),
    (lambda: ProtoNet(MLP(1, [4], 1), distance="cosine"), "learner.distance"),
    (lambda: ProtoNet(MLP(1, [4], 1), loss="mse"), "learner.loss"),
])
def test_bad_learner_option_names_the_field(build, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        build()


def test_integer_labels_with_mse_name_the_loss_option():
    batch = classification_tasks(2, ways=3, shots=1, queries=1, seed=24)
    with pytest.raises(ValueError, match=r"learner\.loss"):
        MAML(MLP(3, [4], 3).double(), inner_steps=1).meta_gradients(batch)
