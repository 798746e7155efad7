"""Nash-GBML's coupling penalties: centroid p_C (Eq. 13) and robust p_R (Eq. 14).

Nash-GBML (Sec. 3.1, Eq. 12) gives each task i of a meta-batch of B tasks the inner objective
f_i(θ, φ) = L(φ_i; D_i^tr) + p(θ, φ_i, φ_{−i}), so the inner level is a B-player Nash game that
Algorithm 2 approximates with n simultaneous gradient steps from φ_i = θ. The learner calls

    penalty(anchor, task_params, step) -> Tensor [k]

at every inner step and differentiates ``task_losses.sum() + penalty(...).sum()`` with respect to
the stacked task parameters. ``anchor`` is θ (unbatched tensors; CAVIA: its initial context φ_0,
App. E "set θ = φ_0"), ``task_params`` the players' current parameters [k, ...]. θ and φ_i are the
flattened concatenation of every tensor in the dicts.

The two penalties, with d_i = θ − φ_i, a_i = ‖d_i‖^{2r}, S = Σ_k a_k over the players of the game:

- ``centroid``: p_C^(i) = w (B/(αN))² ‖θ − φ̄‖², φ̄ = (1/B) Σ_k φ_k  (Eq. 13, constant from App. E).
  Options: ``num_tasks_total`` (N), ``inner_lr`` (α of the constant).
- ``robust``: p_R^(i) = w B a_i / (C + S)  (Eq. 14). Options: ``r`` (exponent 2r), ``C``.
- both: ``weight`` (w), ``game_size``, ``at``.

What "entry i" means — the Nash partial (the paper does not spell it out). In a Nash game
player i moves only φ_i and treats the others' φ_{−i} as fixed, so the inner step must use
∂p^(i)/∂φ_i, player i's *own* partial derivative. Autograd of Σ_j p^(j) would give instead
Σ_j ∂p^(j)/∂φ_i (B times too large for p_C; for p_R it adds the other players' denominator
terms, which pull them apart).
Entry i of the returned tensor has the value p^(i), but its gradient routes exactly
∂p^(i)/∂φ_i to φ_i and nothing to the other players: a small autograd Function injects the
closed-form partials

    ∂p_C^(i)/∂φ_i = −(2wK/B)(θ − φ̄),                  K = (B/(αN))²
    ∂p_R^(i)/∂φ_i = −2rwB ‖d_i‖^{2r−2} d_i (C + S − a_i)/(C + S)²

p_R's partial keeps φ_i's own share of the denominator (the a_i inside S: player i's move changes
C + S, and that is *its* derivative), while the other players' a_k are constants for player i
— as a Nash player's partial derivative must. The partials are built from θ and all φ_k with
their graphs, and their own derivatives (with respect to θ and to every φ_k) are exact, so
second-order meta-gradients through the joint inner loop ("back-propagation of φ^(t)", Sec. 3.2)
are exact too. Distances are computed as sums of squares raised to r, never as norms raised to a
power (the derivative of a norm at 0 is NaN). The returned tensor has no gradient with respect
to the anchor: the learner differentiates the inner objective only with respect to the players.

Deliberate choices where the paper is silent or ambiguous:

- ``at`` — where the penalty is evaluated (default ``inner``):
  ``inner`` is Algorithm 2 literally: the penalty at the players' current parameters φ^k at every
  inner step k, including k = 0. Every player starts at φ_i = θ, where both penalties, their
  partials and the partials' total derivatives with respect to θ are exactly 0, so the penalty
  acts from the second inner step on and **is inert with one inner step**. That is why the
  official code's p_R changes nothing (its sinusoid learners use one inner step), and why the
  paper's sinusoid setting "5-shot 3-step" (n = 3) matters. ``inner`` is the default because it
  is the paper's algorithm and is active at the paper's n = 3 (and n = 5 for CelebA and
  mini-ImageNet).
  ``adapted`` evaluates the penalty at adapted parameters, so that it also acts with one step:
  at each inner step the learner first takes the plain step ψ = φ^k − α ∘ ∇L(φ^k), then the
  penalty step φ^{k+1} = ψ − α ∘ ∂p^(i)/∂ψ_i evaluated at ψ. This is not in the paper. The
  learner must call ``penalty(anchor, adapted, step, where="adapted")``; a learner that calls it
  without ``where`` (i.e. at the inner step) raises an error naming ``learner.penalty.at`` rather
  than silently running the ``inner`` game.
- Step 0 of ``inner``: the penalty returns exact zeros without building a graph when the players
  are still at the anchor (up to rounding). This is exact (value, partials and their total
  derivatives are 0 there) and avoids two numerical traps: an anchor recomputed as the mean of
  the per-task copies differs from them by rounding, and p_R's scale invariance (partials ~ 1/‖d‖,
  Jacobian ~ 1/C at d = 0) would turn that rounding into a large spurious step; and the O(1/C)
  Jacobian terms would cancel catastrophically in the meta-gradient.
- ``game_size`` (default null = all k tasks in one game): the number of players B of one game.
  The learner passes every task it adapts at once, so evaluation on hundreds of test tasks would
  otherwise be one game with B in the hundreds — a different game, and for p_C a per-step
  contraction c = 2wB/(αN²) large enough to diverge. With ``game_size: B`` consecutive tasks
  form games of B players (the last one smaller), so evaluation adapts test tasks in Nash
  games of B tasks, as training does (the paper does not say whether test-time adaptation uses
  the penalised Nash inner loop). Set it to the training meta-batch.
- ``num_tasks_total`` (N) has no default: the paper states it only for CelebA (162770) and
  mini-ImageNet (C(64,5) = 7,624,512); for the sinusoid it is not stated; N = 100 is our
  choice, the number of training amplitude bins (the official code's ``num_tasks_mtrain``).
- ``inner_lr`` (α of the constant) has no default either: it is the learner's inner learning rate
  for MAML, TR-MAML and CAVIA, and 0.05 for Meta-SGD, whose rates are learned (App. E).
- ``C`` defaults to 1e-8 (not given in the paper; safe in float32). ``r`` is a positive
  integer (the paper uses 1 and 2).
- The player's step uses the closed-form partial, not the official code's sequential
  (Gauss-Seidel, task-order dependent) accumulation of the centroid and of p_R's denominator:
  all players move simultaneously, as Algorithm 2's "for all i".
"""
from __future__ import annotations

import math

import torch

Params = dict[str, torch.Tensor]

PENALTIES = ("centroid", "robust")
PLACES = ("inner", "adapted")
COMMON_OPTIONS = ("game_size", "at")
OWN_OPTIONS = {"centroid": ("num_tasks_total", "inner_lr"), "robust": ("r", "C")}


# -- gradient routing ----------------------------------------------------------------------------

class _PlayerPartials(torch.autograd.Function):
    """Entry i = player i's penalty value; d(Σ entries)/dφ_i = the supplied partial ∂p^(i)/∂φ_i.

    Inputs: the values [k] (detached), the number n of tensors, the n player tensors [k, ...],
    then their n partials [k, ...]. The partials are saved with their graphs, so the gradient
    the backward returns (grad_out · partial) is itself differentiable with respect to θ and
    every φ_k when the learner builds the graph of the inner step (create_graph=True).
    """

    @staticmethod
    def forward(ctx, values, count, *tensors):
        ctx.count = count
        ctx.save_for_backward(*tensors[count:])
        return values.clone()

    @staticmethod
    def backward(ctx, grad_out):
        partials = ctx.saved_tensors
        grads = [grad_out.view(-1, *([1] * (p.dim() - 1))) * p for p in partials]
        return (None, None, *grads, *([None] * ctx.count))


def route_partials(values: torch.Tensor, task_params: Params, partials: Params) -> torch.Tensor:
    names = list(task_params)
    return _PlayerPartials.apply(values.detach(), len(names), *(task_params[n] for n in names),
                                 *(partials[n] for n in names))


# -- games --------------------------------------------------------------------------------------

def game_index(num_players: int, game_size: int | None, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Game of every player [k] and the number of players of every game [G] (consecutive groups)."""
    size = num_players if game_size is None else min(game_size, num_players)
    game = torch.arange(num_players, device=device) // size
    sizes = torch.bincount(game)
    return game, sizes


def game_sum(values: torch.Tensor, game: torch.Tensor, num_games: int) -> torch.Tensor:
    """Per-game sums of values [k, ...] → [G, ...] (differentiable)."""
    return values.new_zeros(num_games, *values.shape[1:]).index_add(0, game, values)


def differences(anchor: Params, task_params: Params) -> Params:
    """d_i = θ − φ_i per tensor, [k, ...]."""
    missing = sorted(set(task_params) - set(anchor))
    if missing:
        raise ValueError(f"learner.penalty: the anchor has no tensor {missing[0]!r} of the task parameters")
    return {name: anchor[name].unsqueeze(0) - value for name, value in task_params.items()}


def squared_distances(diffs: Params) -> torch.Tensor:
    """‖d_i‖² over the concatenation of all tensors: [k]."""
    return sum(d.pow(2).flatten(1).sum(1) for d in diffs.values())


def per_player(coefficient: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    """coefficient [k] times tensor [k, ...], broadcast over the tensor's own dims."""
    return coefficient.view(-1, *([1] * (tensor.dim() - 1))) * tensor


def exact_zeros(task_params: Params) -> torch.Tensor:
    """Zeros [k] whose gradient with respect to the players is exactly zero (not missing), so a
    caller may differentiate the penalty on its own."""
    return sum(value.flatten(1).sum(1) for value in task_params.values()) * 0.0


def at_anchor(diffs: Params, anchor: Params) -> bool:
    """Whether every player is still at the anchor, up to the rounding of a recomputed anchor."""
    for name, d in diffs.items():
        scale = 1.0 + anchor[name].detach().abs().max().item() if anchor[name].numel() else 1.0
        if d.detach().abs().max().item() > 64 * torch.finfo(d.dtype).eps * scale:
            return False
    return True


# -- the penalties --------------------------------------------------------------------------------

class NashPenalty:
    """Common part: weight, games, where it is evaluated. Subclasses give values and partials."""

    name = "base"

    def __init__(self, weight: float, game_size: int | None = None, at: str = "inner"):
        self.weight = check_positive("weight", weight)
        if game_size is not None and (not isinstance(game_size, int) or isinstance(game_size, bool) or game_size < 1):
            raise ValueError(f"learner.penalty.game_size: expected a positive integer or null, got {game_size!r}")
        if at not in PLACES:
            raise ValueError(f"learner.penalty.at: expected one of {list(PLACES)}, got {at!r}")
        self.game_size = game_size
        self.at = at

    def __call__(self, anchor: Params, task_params: Params, step: int, where: str = "inner") -> torch.Tensor:
        if where != self.at:
            raise ValueError(f"learner.penalty.at: the penalty is configured to be evaluated at {self.at!r} "
                             f"but the learner evaluates it at {where!r}; 'adapted' needs a learner that takes "
                             "the plain step first and then calls penalty(..., where='adapted')")
        reference = next(iter(task_params.values()))
        k = reference.shape[0]
        diffs = differences(anchor, task_params)
        if where == "inner" and step == 0 and at_anchor(diffs, anchor):
            return exact_zeros(task_params)
        game, sizes = game_index(k, self.game_size, reference.device)
        values, partials = self.values_and_partials(diffs, game, sizes.to(reference.dtype))
        return route_partials(values, task_params, partials)

    def values_and_partials(self, diffs: Params, game: torch.Tensor,
                            sizes: torch.Tensor) -> tuple[torch.Tensor, Params]:
        raise NotImplementedError  # pragma: no cover - interface


class CentroidPenalty(NashPenalty):
    """p_C^(i) = w (B/(αN))² ‖θ − φ̄‖²; every player of a game has the same value and partial."""

    name = "centroid"

    def __init__(self, weight: float, num_tasks_total: int | None = None, inner_lr: float | None = None,
                 game_size: int | None = None, at: str = "inner"):
        super().__init__(weight, game_size, at)
        if num_tasks_total is None:
            raise ValueError("learner.penalty.num_tasks_total: required by the centroid penalty: N, the number of "
                             "tasks of the domain in (B/(αN))² (Nash-GBML Eq. 13); 100 for the skewed sinusoid "
                             "(its training bins)")
        if not isinstance(num_tasks_total, int) or isinstance(num_tasks_total, bool) or num_tasks_total < 1:
            raise ValueError(f"learner.penalty.num_tasks_total: expected a positive integer, got {num_tasks_total!r}")
        if inner_lr is None:
            raise ValueError("learner.penalty.inner_lr: required by the centroid penalty: α of (B/(αN))² — the "
                             "learner's inner_lr (MAML, TR-MAML, CAVIA) or 0.05 for Meta-SGD (Nash-GBML App. E)")
        self.num_tasks_total = num_tasks_total
        self.inner_lr = check_positive("inner_lr", inner_lr)

    def constant(self, players: torch.Tensor) -> torch.Tensor:
        """(B/(αN))² of games of ``players`` players."""
        return (players / (self.inner_lr * self.num_tasks_total)) ** 2

    def effective_coefficient(self, players: int) -> float:
        """c = 2wB/(αN²): the fraction of θ − φ̄ one SGD step with rate α adds to every φ_i."""
        return 2 * self.weight * players / (self.inner_lr * self.num_tasks_total ** 2)

    def values_and_partials(self, diffs, game, sizes):
        num_games = sizes.shape[0]
        players = sizes[game]
        constant = self.constant(players)
        # θ − φ̄ of each game is the mean of its players' d_k.
        offsets = {name: (game_sum(d, game, num_games) / per_player_shape(sizes, d))[game]
                   for name, d in diffs.items()}
        values = self.weight * constant * squared_distances(offsets)
        coefficient = -2 * self.weight * constant / players
        partials = {name: per_player(coefficient, offset) for name, offset in offsets.items()}
        return values, partials


class RobustPenalty(NashPenalty):
    """p_R^(i) = w B ‖θ − φ_i‖^{2r} / (C + Σ_k ‖θ − φ_k‖^{2r})."""

    name = "robust"

    def __init__(self, weight: float, r: int = 1, C: float = 1e-8, game_size: int | None = None,
                 at: str = "inner"):
        super().__init__(weight, game_size, at)
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            raise ValueError(f"learner.penalty.r: expected a positive integer (the paper uses 1 or 2), got {r!r}")
        self.r = r
        self.C = check_positive("C", C)

    def values_and_partials(self, diffs, game, sizes):
        players = sizes[game]
        squared = squared_distances(diffs)
        powered = squared ** self.r  # a_i = ‖d_i‖^{2r}
        total = self.C + game_sum(powered, game, sizes.shape[0])[game]  # C + S of the player's game
        values = self.weight * players * powered / total
        # Player i's own partial: φ_i's share a_i of the denominator counts, the others' do not.
        coefficient = (-2 * self.r * self.weight * players * squared ** (self.r - 1)
                       * (total - powered) / total ** 2)
        partials = {name: per_player(coefficient, d) for name, d in diffs.items()}
        return values, partials


def per_player_shape(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values [G] viewed to broadcast against a [G, ...] tensor shaped like ``like`` [k, ...]."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def check_positive(field: str, value) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or not value > 0:
        raise ValueError(f"learner.penalty.{field}: must be a finite number > 0, got {value!r}")
    return float(value)


CLASSES = {"centroid": CentroidPenalty, "robust": RobustPenalty}


def build_penalty(name: str | None = None, weight: float | None = None, **options) -> NashPenalty:
    """The penalty of a ``learner.penalty`` section: ``{name: centroid|robust, weight: w, ...}``."""
    if name not in CLASSES:
        raise ValueError(f"learner.penalty.name: expected one of {list(PENALTIES)}, got {name!r}")
    if weight is None:
        raise ValueError(f"learner.penalty.weight: required (the penalty weight w of p_{name[0].upper()}(w))")
    known = OWN_OPTIONS[name] + COMMON_OPTIONS
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"learner.penalty.{unknown[0]}: not an option of the {name} penalty; "
                         f"its options: {['name', 'weight', *known]}")
    return CLASSES[name](weight, **options)


__all__ = ["build_penalty", "NashPenalty", "CentroidPenalty", "RobustPenalty", "PENALTIES", "PLACES"]
