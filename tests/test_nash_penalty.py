"""Nash-GBML penalties against independent references (Eqs. 13–14).

References, all in float64 on the flattened parameters:
- the hand-derived closed-form partials ∂p^(i)/∂φ_i, written out here;
- autograd of player i's own penalty (Eq. 13/14 written out here) with the other players held fixed;
- a joint inner loop whose steps use torch.func.grad of that formula in player i's own argument,
  differentiated end to end, and central finite differences of the whole loop in θ.
"""
from __future__ import annotations

import pytest
import torch

from taskbal.learners.nash_penalty import build_penalty

DTYPE = torch.float64
SHAPES = {"weight": (2, 3), "bias": (3,)}  # θ is the concatenation of both: d = 9


# -- the formulas of the paper, written independently of the module ---------------------------------

def centroid_formula(theta: torch.Tensor, phis: torch.Tensor, w: float, N: int, alpha: float) -> torch.Tensor:
    """Eq. 13 for every player [k]: w (B/(αN))² ‖θ − (1/B) Σ_k φ_k‖² (the same for all players)."""
    B = phis.shape[0]
    value = w * (B / (alpha * N)) ** 2 * (theta - phis.mean(0)).pow(2).sum()
    return value.expand(B)


def robust_formula(theta: torch.Tensor, phis: torch.Tensor, w: float, r: int, C: float) -> torch.Tensor:
    """Eq. 14 for every player [k]: w B ‖θ − φ_i‖^{2r} / (C + Σ_k ‖θ − φ_k‖^{2r})."""
    B = phis.shape[0]
    a = (theta - phis).pow(2).sum(1) ** r
    return w * B * a / (C + a.sum())


def notes_centroid_partials(theta, phis, w, N, alpha):
    B = phis.shape[0]
    return (-(2 * w * B / (alpha ** 2 * N ** 2)) * (theta - phis.mean(0))).expand_as(phis)


def notes_robust_partials(theta, phis, w, r, C):
    B = phis.shape[0]
    d = theta - phis
    q = d.pow(2).sum(1)
    a, S = q ** r, (q ** r).sum()
    return (-2 * r * w * B * q ** (r - 1) * (C + S - a) / (C + S) ** 2)[:, None] * d


CASES = [
    ("centroid", dict(num_tasks_total=10, inner_lr=0.1), 0.3),
    ("robust", dict(r=1, C=1e-8), 0.05),
    ("robust", dict(r=2, C=1e-8), 0.05),
]


def formula(name, options, w):
    if name == "centroid":
        return lambda theta, phis: centroid_formula(theta, phis, w, options["num_tasks_total"], options["inner_lr"])
    return lambda theta, phis: robust_formula(theta, phis, w, options["r"], options["C"])


def notes_partials(name, options, w, theta, phis):
    if name == "centroid":
        return notes_centroid_partials(theta, phis, w, options["num_tasks_total"], options["inner_lr"])
    return notes_robust_partials(theta, phis, w, options["r"], options["C"])


# -- helpers: dicts of tensors <-> flat vectors -----------------------------------------------------

def unflatten(flat: torch.Tensor, batched: bool) -> dict[str, torch.Tensor]:
    out, start = {}, 0
    for name, shape in SHAPES.items():
        size = torch.Size(shape).numel()
        part = flat[..., start:start + size]
        out[name] = part.reshape(*(flat.shape[:1] if batched else ()), *shape)
        start += size
    return out


def flatten(params: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([params[name].reshape(params[name].shape[0], -1) for name in SHAPES], dim=1)


def random_instance(seed: int, players: int, spread: float = 0.3):
    generator = torch.Generator().manual_seed(seed)
    theta = torch.randn(9, generator=generator, dtype=DTYPE)
    phis = theta + spread * torch.randn(players, 9, generator=generator, dtype=DTYPE)
    return theta, phis


def module_partials(penalty, theta, phis, step=1):
    """d(Σ entries)/dφ as the learner computes it, flattened [k, d]."""
    players = {name: t.clone().requires_grad_() for name, t in unflatten(phis, batched=True).items()}
    entries = penalty(unflatten(theta, batched=False), players, step)
    grads = torch.autograd.grad(entries.sum(), list(players.values()))
    return entries.detach(), flatten(dict(zip(players, grads)))


# -- first-order: values and partials ---------------------------------------------------------------

@pytest.mark.parametrize("name,options,w", CASES)
@pytest.mark.parametrize("players", [3, 4, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_values_and_partials_match_the_closed_forms(name, options, w, players, seed):
    theta, phis = random_instance(seed, players)
    entries, partials = module_partials(build_penalty(name, w, **options), theta, phis)
    torch.testing.assert_close(entries, formula(name, options, w)(theta, phis), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(partials, notes_partials(name, options, w, theta, phis), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name,options,w", CASES)
@pytest.mark.parametrize("players", [3, 5])
def test_partial_is_the_players_own_derivative_not_the_gradient_of_the_sum(name, options, w, players):
    theta, phis = random_instance(7, players)
    own = torch.zeros_like(phis)
    for i in range(players):
        x = phis[i].clone().requires_grad_()
        rows = torch.stack([x if j == i else phis[j] for j in range(players)])  # others: constants
        own[i] = torch.autograd.grad(formula(name, options, w)(theta, rows)[i], x)[0]
    _, partials = module_partials(build_penalty(name, w, **options), theta, phis)
    torch.testing.assert_close(partials, own, rtol=1e-10, atol=1e-14)
    # The gradient of the sum of all players' penalties is a different thing (B times p_C's partial;
    # for p_R it adds the other players' denominator terms).
    everything = phis.clone().requires_grad_()
    of_sum = torch.autograd.grad(formula(name, options, w)(theta, everything).sum(), everything)[0]
    assert (of_sum - own).abs().max() > 1e-3 * own.abs().max()


@pytest.mark.parametrize("name,options,w", CASES)
def test_all_players_at_the_anchor_have_zero_partials(name, options, w):
    theta, _ = random_instance(3, 4)
    phis = theta.expand(4, 9).clone()
    for step in (0, 1):
        entries, partials = module_partials(build_penalty(name, w, **options), theta, phis, step)
        assert torch.count_nonzero(entries) == 0 and torch.count_nonzero(partials) == 0


def test_robust_partial_of_a_player_at_the_anchor_is_zero_while_others_move():
    theta, phis = random_instance(4, 4)
    phis[2] = theta
    for r in (1, 2):
        _, partials = module_partials(build_penalty("robust", 0.1, r=r), theta, phis)
        assert torch.count_nonzero(partials[2]) == 0
        assert partials[[0, 1, 3]].abs().min(dim=1).values.gt(0).all()


def test_centroid_partials_vanish_when_the_centroid_is_the_anchor():
    theta, phis = random_instance(5, 4)
    phis = phis - phis.mean(0) + theta  # players apart, centroid = θ
    _, partials = module_partials(build_penalty("centroid", 0.1, num_tasks_total=10, inner_lr=0.1), theta, phis)
    assert partials.abs().max() < 1e-12


def test_centroid_step_contracts_the_centroid_by_the_notes_coefficient():
    """One SGD step of rate α on p_C alone adds c (θ − φ̄) to every φ_i, c = 2wB/(αN²)
    (0.5 for B = 25, α = 0.001, N = 100, w = 0.1)."""
    theta, phis = random_instance(6, 25)
    penalty = build_penalty("centroid", 0.1, num_tasks_total=100, inner_lr=0.001)
    _, partials = module_partials(penalty, theta, phis)
    moved = -0.001 * partials
    torch.testing.assert_close(moved, (0.5 * (theta - phis.mean(0))).expand_as(phis), rtol=1e-10, atol=1e-14)
    assert penalty.effective_coefficient(25) == pytest.approx(0.5)


@pytest.mark.parametrize("name,options,w", CASES)
def test_games_are_independent_consecutive_groups(name, options, w):
    theta, phis = random_instance(8, 5)
    grouped = build_penalty(name, w, game_size=3, **options)
    single = build_penalty(name, w, **options)
    entries, partials = module_partials(grouped, theta, phis)
    first = module_partials(single, theta, phis[:3])
    second = module_partials(single, theta, phis[3:])
    torch.testing.assert_close(entries, torch.cat([first[0], second[0]]), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(partials, torch.cat([first[1], second[1]]), rtol=1e-12, atol=1e-14)


# -- second order: the joint inner loop, differentiated end to end ----------------------------------

def quadratic_tasks(seed: int, players: int):
    """Support and query losses ½‖A φ − b‖² of each task (different A, b per task)."""
    generator = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=generator, dtype=DTYPE)  # noqa: E731
    return (make(players, 6, 9) / 3, make(players, 6), make(players, 6, 9) / 3, make(players, 6))


def task_losses(phis, A, b):
    return 0.5 * (torch.einsum("kij,kj->ki", A, phis) - b).pow(2).sum(1)


def module_inner_loop(theta, tasks, penalty, steps, lr):
    """The learner's inner loop on flat θ (as MAML._coupled_meta_gradients: φ^0 = θ expanded)."""
    A, b, A_query, b_query = tasks
    anchor = unflatten(theta, batched=False)
    players = {name: value.expand(A.shape[0], *value.shape) for name, value in anchor.items()}
    for step in range(steps):
        objective = task_losses(flatten(players), A, b).sum() + penalty(anchor, players, step).sum()
        grads = torch.autograd.grad(objective, list(players.values()), create_graph=True)
        players = {name: value - lr * g for (name, value), g in zip(players.items(), grads)}
    return task_losses(flatten(players), A_query, b_query)


def reference_inner_loop(theta, tasks, own_penalty, steps, lr):
    """The same game with each player's step from torch.func.grad of its own Eq. 13/14 term."""
    A, b, A_query, b_query = tasks
    k = A.shape[0]
    phis = theta.expand(k, 9)
    for _ in range(steps):
        loss_grads = torch.func.vmap(torch.func.grad(lambda p, a, c: 0.5 * (a @ p - c).pow(2).sum()))(phis, A, b)

        def own(x, i, phis):
            rows = torch.stack([x if j == i else phis[j] for j in range(k)])
            return own_penalty(theta, rows)[i]

        partials = torch.stack([torch.func.grad(own)(phis[i], i, phis) for i in range(k)])
        phis = phis - lr * (loss_grads + partials)
    return task_losses(phis, A_query, b_query)


@pytest.mark.parametrize("name,options,w", [
    ("centroid", dict(num_tasks_total=4, inner_lr=0.2), 0.5),
    ("robust", dict(r=1, C=1e-8), 0.05),
    ("robust", dict(r=2, C=1e-8), 0.5),
])
def test_second_order_meta_gradient_through_three_joint_steps(name, options, w):
    theta = torch.randn(9, generator=torch.Generator().manual_seed(11), dtype=DTYPE)
    tasks, steps, lr = quadratic_tasks(12, 4), 3, 0.2
    own_penalty = formula(name, options, w)

    leaf = theta.clone().requires_grad_()
    losses = module_inner_loop(leaf, tasks, build_penalty(name, w, **options), steps, lr)
    rows = torch.stack([torch.autograd.grad(losses[i], leaf, retain_graph=True)[0] for i in range(4)])

    ref_leaf = theta.clone().requires_grad_()
    ref_losses = reference_inner_loop(ref_leaf, tasks, own_penalty, steps, lr)
    ref_rows = torch.stack([torch.autograd.grad(ref_losses[i], ref_leaf, retain_graph=True)[0] for i in range(4)])
    torch.testing.assert_close(losses.detach(), ref_losses.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rows, ref_rows, rtol=1e-8, atol=1e-10)

    # Central finite differences of the whole loop in θ, for the total.
    h, fd = 1e-6, torch.zeros(9, dtype=DTYPE)
    for j in range(9):
        e = torch.zeros(9, dtype=DTYPE)
        e[j] = h
        plus = reference_inner_loop(theta + e, tasks, own_penalty, steps, lr).sum()
        minus = reference_inner_loop(theta - e, tasks, own_penalty, steps, lr).sum()
        fd[j] = (plus - minus) / (2 * h)
    torch.testing.assert_close(rows.sum(0), fd, rtol=1e-5, atol=1e-7)
    # The penalty did something: the plain loop gives other meta-gradients.
    plain_leaf = theta.clone().requires_grad_()
    plain = reference_inner_loop(plain_leaf, tasks, lambda t, p: p.new_zeros(p.shape[0]), steps, lr)
    assert (torch.autograd.grad(plain.sum(), plain_leaf)[0] - rows.sum(0)).abs().max() > 1e-6


@pytest.mark.parametrize("name,options,w", CASES)
def test_one_inner_step_is_inert_for_the_literal_game(name, options, w):
    theta = torch.randn(9, generator=torch.Generator().manual_seed(13), dtype=DTYPE)
    tasks = quadratic_tasks(14, 4)
    with_penalty = theta.clone().requires_grad_()
    without = theta.clone().requires_grad_()
    a = module_inner_loop(with_penalty, tasks, build_penalty(name, w, **options), 1, 0.2)
    b = reference_inner_loop(without, tasks, lambda t, p: p.new_zeros(p.shape[0]), 1, 0.2)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    torch.testing.assert_close(torch.autograd.grad(a.sum(), with_penalty)[0],
                               torch.autograd.grad(b.sum(), without)[0], rtol=0, atol=1e-12)


def test_step_zero_ignores_rounding_of_a_recomputed_anchor_but_not_real_displacement():
    theta = torch.randn(9, generator=torch.Generator().manual_seed(15), dtype=torch.float32)
    copies = theta.expand(25, 9) * (1 + torch.finfo(torch.float32).eps)  # a mean of copies, off by rounding
    penalty = build_penalty("robust", 0.01, r=1)
    players = {n: t.clone().requires_grad_() for n, t in unflatten(copies, batched=True).items()}
    assert torch.count_nonzero(penalty(unflatten(theta, batched=False), players, 0)) == 0
    # Otherwise p_R's 1/C-scale partials would turn rounding into a large step:
    entries = penalty(unflatten(theta, batched=False), players, 1)
    grads = torch.autograd.grad(entries.sum(), list(players.values()))
    assert max(g.abs().max().item() for g in grads) > 1e-3
    theta64, moved = random_instance(16, 3)
    _, partials = module_partials(penalty, theta64, moved, step=0)
    assert partials.abs().max() > 0


def test_adapted_needs_a_learner_that_evaluates_it_there():
    theta, phis = random_instance(17, 3)
    penalty = build_penalty("robust", 0.01, r=2, at="adapted")
    players = {n: t.clone().requires_grad_() for n, t in unflatten(phis, batched=True).items()}
    with pytest.raises(ValueError, match=r"learner\.penalty\.at"):
        penalty(unflatten(theta, batched=False), players, 0)
    entries = penalty(unflatten(theta, batched=False), players, 0, where="adapted")  # acts at step 0
    torch.testing.assert_close(entries.detach(), robust_formula(theta, phis, 0.01, 2, 1e-8))


# -- through the MAML learner: exact per-task rows of the coupled game --------------------------

def sinusoid_batch(seed: int):
    """Four sinusoid tasks of 3 support and 3 query points (float64), drawn from ``seed``."""
    from taskbal.learners import TaskBatch

    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 6, 1, generator=generator, dtype=DTYPE) * 10 - 5
    amplitude = torch.rand(4, 1, 1, generator=generator, dtype=DTYPE) * 4 + 1
    return TaskBatch(x[:, :3], amplitude * torch.sin(x[:, :3]), x[:, 3:], amplitude * torch.sin(x[:, 3:]),
                     torch.zeros(4, 1, dtype=DTYPE))


def test_maml_learner_with_penalty_matches_finite_differences():
    from taskbal.learners import MAML
    from taskbal.models import MLP

    torch.manual_seed(0)
    model = MLP(1, [5], 1).double()
    batch = sinusoid_batch(1)
    learner = MAML(model, inner_steps=3, inner_lr=0.05,
                   penalty={"name": "robust", "weight": 0.05, "r": 1})
    losses, grads = learner.meta_gradients(batch)
    flat = learner.flat_meta_parameters()
    h, fd = 1e-6, torch.zeros_like(flat)
    for j in range(flat.numel()):
        e = torch.zeros_like(flat)
        e[j] = h
        fd[j] = (learner.adapted_query_losses(batch, flat + e)[1]
                 - learner.adapted_query_losses(batch, flat - e)[1]) / (2 * h)
    torch.testing.assert_close(grads[1], fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("learner_name", ["maml", "metasgd", "cavia"])
@pytest.mark.parametrize("penalty", [{"name": "robust", "weight": 0.05, "r": 2},
                                     {"name": "centroid", "weight": 0.1, "num_tasks_total": 4, "inner_lr": 0.05}])
def test_one_backward_pass_of_the_weighted_loss_is_the_weighted_sum_of_the_exact_rows(learner_name, penalty):
    """TR-MAML's weights are known before the gradients: the loop then asks for d(Σ_i w_i L_i)/dθ in one
    backward pass instead of the Jacobian's rows (checked above against finite differences)."""
    from taskbal.learners import CAVIA, MAML, MetaSGD
    from taskbal.models import MLP

    batch = sinusoid_batch(3)
    torch.manual_seed(0)
    options = dict(inner_steps=3, inner_lr=0.05, penalty=dict(penalty, game_size=4))
    learner = {"maml": lambda: MAML(MLP(1, [5], 1).double(), **options),
               "metasgd": lambda: MetaSGD(MLP(1, [5], 1).double(), **options),
               "cavia": lambda: CAVIA(MLP(1, [5], 1, context=2).double(), num_context=2, **options)}[learner_name]()
    assert learner.couples_tasks
    weights = torch.tensor([0.7, 0.1, 1.9, 1.3], dtype=DTYPE)
    losses, rows = learner.meta_gradients(batch)
    one_pass_losses, direction = learner.weighted_meta_gradient(batch, weights)
    torch.testing.assert_close(one_pass_losses, losses, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(direction, weights @ rows, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(direction, torch.full_like(weights, 1.0) @ rows)  # the weights matter


def test_adapted_penalty_steps_after_the_plain_step_with_the_closed_form_pull():
    """``at: adapted`` with one inner step: φ = ψ − α ∂p_C/∂ψ_i at ψ = θ − α∇L (closed-form partial
    −(2wK/B)(θ − ψ̄)); the literal ``inner`` game leaves ψ unchanged with one step."""
    from taskbal.learners import MAML
    from taskbal.models import MLP

    torch.manual_seed(0)
    batch = sinusoid_batch(3)
    w, N, alpha = 0.5, 4, 0.1
    options = {"name": "centroid", "weight": w, "num_tasks_total": N, "inner_lr": alpha}

    def adapted(at):
        learner = MAML(MLP(1, [5], 1).double(), inner_steps=1, inner_lr=alpha, penalty={**options, "at": at})
        copies = learner.per_task_copies(learner.meta_parameters(), 4)
        out = learner.adapt(copies, batch.support_x, batch.support_y, create_graph=False)
        return flatten_batched(out), learner.flat_meta_parameters()

    torch.manual_seed(0)
    plain, theta = adapted("inner")
    torch.manual_seed(0)
    pulled, _ = adapted("adapted")
    K = (4 / (alpha * N)) ** 2
    expected = plain + alpha * (2 * w * K / 4) * (theta - plain.mean(0))
    torch.testing.assert_close(pulled, expected)
    assert (pulled - plain).abs().max() > 1e-3  # the pull is not negligible in this instance


def flatten_batched(params: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(p.shape[0], -1) for p in params.values()], dim=1)


# -- configuration errors --------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,field", [
    (dict(name="nash", weight=0.1), "name"),
    (dict(name="robust"), "weight"),
    (dict(name="robust", weight=-1.0), "weight"),
    (dict(name="robust", weight="1e-8"), "weight"),  # YAML reads 1e-8 (no dot) as a string
    (dict(name="robust", weight=0.1, r=0), "r"),
    (dict(name="robust", weight=0.1, r=1.5), "r"),
    (dict(name="robust", weight=0.1, C=0.0), "C"),
    (dict(name="robust", weight=0.1, num_tasks_total=100), "num_tasks_total"),
    (dict(name="centroid", weight=0.1, inner_lr=0.001), "num_tasks_total"),
    (dict(name="centroid", weight=0.1, num_tasks_total=0, inner_lr=0.001), "num_tasks_total"),
    (dict(name="centroid", weight=0.1, num_tasks_total=100), "inner_lr"),
    (dict(name="centroid", weight=0.1, num_tasks_total=100, inner_lr=0), "inner_lr"),
    (dict(name="centroid", weight=0.1, num_tasks_total=100, inner_lr=0.001, r=2), "r"),
    (dict(name="robust", weight=0.1, at="outer"), "at"),
    (dict(name="robust", weight=0.1, game_size=0), "game_size"),
])
def test_bad_options_name_their_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"learner\.penalty\.{field}\b"):
        build_penalty(**kwargs)


@pytest.mark.parametrize("penalty", [
    {"name": "robust", "weight": 0.05, "r": 2},
    {"name": "centroid", "weight": 0.1, "num_tasks_total": 4, "inner_lr": 0.05},
])
def test_per_copy_rows_sum_to_the_exact_total_with_a_penalty(penalty):
    """The table configs use ``penalty_gradients: per_copy`` for mean-weighted rows: its rows must sum
    to the jacobian rows' sum (the exact d(Σ_i L_i)/dθ), even though the anchor is then the mean of
    the per-task copies (rounding at step 0)."""
    from taskbal.learners import MAML
    from taskbal.models import MLP

    batch = sinusoid_batch(2)
    torch.manual_seed(0)
    model = MLP(1, [5], 1).double()
    sums = {}
    for mode in ("jacobian", "per_copy"):
        learner = MAML(model, inner_steps=3, inner_lr=0.05, penalty=dict(penalty, game_size=4),
                       penalty_gradients=mode)
        sums[mode] = learner.meta_gradients(batch)[1].sum(0)
    torch.testing.assert_close(sums["per_copy"], sums["jacobian"], rtol=1e-9, atol=1e-11)
