"""SIMOL: soft-improvement multi-objective meta-learning (Yu, Chen, Wang & Kwok, ICLR 2023).

The outer step descends along the re-weighted mean of the per-task meta-gradients
(Algorithm 1, step 6; Eq. 15 with MAML)::

    w ← w − β · (1/k) Σ_τ r_θ(τ) ∇_w L_τ(w_τ*(w))        (r_θ detached: Lemma 4.1)

and the re-weighting network r_θ(τ) (its last layer's output squared, so r > 0) is
trained by gradient *ascent* on the mini-batch objective (Eqs. 13–14)::

    K̃_B(θ) = −1/(2λ̂') · ‖(1/k) Σ_τ r_θ(τ) g_τ‖² − λ̂''/2 · ((1/k) Σ_τ r_θ(τ) − 1)²
    θ ← θ + β' ∇_θ K̃_B(θ)

With G = [⟨g_i, g_j⟩] the k×k Gram matrix, ‖·‖² = rᵀGr / k² (``objective``). The training
step computes ∇_θ K̃_B in closed form (``theta_gradients``):
∂K̃/∂r = −Gr/(λ̂'k²) − λ̂''/k·(r̄ − 1), with Gr = g(gᵀr) (G is never formed), back-propagated
by hand through r = out², the linear layers and their ReLUs. These are the numbers autograd
gives for ``objective`` (to float rounding; tests/test_simol.py checks both).

Speed (benchmarks/bench_weighting.py; the goal is a step within 1.05× of MAML's). At meta-batch 16
the re-weighting network is a few 16×32 matrices, so the weighting's time is the number of tensor
operations, not arithmetic: θ lives in one flat tensor whose views are the network's weights, the
gradient is written into one flat buffer, and the ascent step (``ThetaAscent``: plain, or Adam as
torch.optim.Adam computes it) is five operations on that tensor, instead of
torch.optim.Adam's per-step Python overhead, a large share of the weighting's time.

Choices where the paper is silent or inconsistent:
- Input of r_θ (config ``features``): ``support`` feeds each task's support set
  (x_1, y_1, …, x_K, y_K); ``support+loss`` appends the task's post-adaptation query loss.
  The network (config ``network``) is an MLP with the meta-learner's widths (``hidden``, default
  32-32, ReLU), or for image tasks ``conv4``: "a CNN4 with a 3-layer FC" (SIMOL §5.2, widths and
  input not stated). We embed every support image with a conv4 trunk (``filters``, BatchNorm on the
  batch of all the meta-batch's support images), concatenate a task's embeddings in class order (the
  order carries the labels, as in the flat support set of the MLP) and map them through the 3 linear
  layers ``hidden`` + 1. Its θ gradient comes from autograd (the closed form is the MLP's).
- Initialisation: the output layer starts with small weights (``init_scale``) and bias 1,
  so r ≈ 1 and the first steps equal MAML's.
- Where ∇_θ K̃ is evaluated (``theta_at``): ``current`` reuses the gradients at w^s
  (Eqs. 13–14; what the paper's 15 % time overhead implies); ``next`` recomputes them at
  w^{s+1} as Algorithm 1 step 7 literally says (one more meta-gradient pass per step).
- λ̂', λ̂'', β' and the θ optimiser: the paper selected λ̂', λ̂'' from
  {0.001, 0.01, 0.1, 1} and β' from {0.01, 0.03, 0.1, 0.3, 1} without reporting the
  choice, and names Adam as the optimiser only for classification. Plain gradient
  ascent (Eq. 14, ``theta_optimizer: sgd``) diverges on the sinusoid for every β' of
  that grid we tried (0.1 within 3 iterations at 5 shots, 0.01 within 4 at 2 shots: the
  Gram matrix of the task gradients is large early in training), so the defaults are Adam with β' = 0.01,
  λ̂' = 1, λ̂'' = 1 — our choice, not the paper's.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..models import MLP
from ..models.conv4 import Conv4Embedding
from ..options import OptionError
from .base import Combined, TaskGradients, Weighting


class ThetaAscent:
    """Gradient *ascent* on one flat tensor θ: plain (Eq. 14) or Adam.

    Adam is torch.optim.Adam's update (no weight decay, no amsgrad) with ``maximize=True``, written
    out on the one tensor (tests/test_simol.py checks both agree step by step)."""

    def __init__(self, theta: torch.Tensor, method: str, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        if method not in ("sgd", "adam"):
            raise OptionError("theta_optimizer", f"expected 'sgd' or 'adam', got {method!r}")
        self.theta, self.method, self.lr, self.betas, self.eps = theta, method, lr, betas, eps
        self.steps = 0
        self.exp_avg = torch.zeros_like(theta) if method == "adam" else None
        self.exp_avg_sq = torch.zeros_like(theta) if method == "adam" else None

    def step(self, gradient: torch.Tensor) -> None:
        """θ ← θ + lr·gradient (sgd), or Adam's step along +gradient."""
        self.steps += 1
        if self.method == "sgd":
            self.theta.add_(gradient, alpha=self.lr)
            return
        beta1, beta2 = self.betas
        self.exp_avg.lerp_(gradient, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
        denominator = (self.exp_avg_sq.sqrt() / (1 - beta2 ** self.steps) ** 0.5).add_(self.eps)
        self.theta.addcdiv_(self.exp_avg, denominator, value=self.lr / (1 - beta1 ** self.steps))

    def to(self, theta: torch.Tensor) -> None:
        """Follow θ to another device or precision (the moments with it)."""
        self.theta = theta
        if self.method == "adam":
            self.exp_avg, self.exp_avg_sq = self.exp_avg.to(theta), self.exp_avg_sq.to(theta)

    def state_dict(self) -> dict:
        return {"method": self.method, "steps": self.steps, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def load_state_dict(self, state: dict) -> None:
        if state.get("method") != self.method:
            raise OptionError("theta_optimizer", f"the saved state is for {state.get('method')!r}, "
                             f"this run uses {self.method!r}")
        self.steps = int(state["steps"])
        if self.method == "adam":
            self.exp_avg.copy_(state["exp_avg"])
            self.exp_avg_sq.copy_(state["exp_avg_sq"])


class ImageReweighting(nn.Module):
    """r_θ's network for image tasks: a conv4 trunk on each support image, the task's embeddings
    concatenated in class order (plus its loss under ``support+loss``), then linear layers with ReLUs."""

    def __init__(self, image_shape: tuple[int, ...], filters: int, hidden: list[int], extra_inputs: int):
        super().__init__()
        self.images, channels, height, width = image_shape
        self.image_shape = (channels, height, width)
        self.trunk = Conv4Embedding(channels, filters, 0, [], bn_affine=True)
        with torch.no_grad():
            embedding = self.trunk(torch.zeros(2, channels, height, width)).shape[1]
        self.head = MLP(self.images * embedding + extra_inputs, hidden, 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        k = inputs.shape[0]
        size = self.images * math.prod(self.image_shape)
        images = inputs[:, :size].reshape(k * self.images, *self.image_shape)
        embedded = self.trunk(images).reshape(k, -1)
        return self.head(torch.cat([embedded, inputs[:, size:]], dim=1))


class SIMOL(Weighting):
    reads = frozenset({"grads", "losses", "features"})
    name = "simol"

    def __init__(self, num_params: int, feature_dim: int | tuple[int, ...], seed: int, *, lambda_grad: float = 1.0,
                 lambda_mean: float = 1.0, theta_lr: float = 0.01, theta_optimizer: str = "adam",
                 hidden: list[int] | None = None, features: str = "support", init_scale: float = 0.01,
                 theta_at: str = "current", network: str = "mlp", filters: int = 32):
        super().__init__(num_params, feature_dim, seed)
        if features not in ("support", "support+loss"):
            raise OptionError("features", f"expected 'support' or 'support+loss', got {features!r}")
        if network not in ("mlp", "conv4"):
            raise OptionError("network", f"expected 'mlp' or 'conv4', got {network!r}")
        if network == "conv4" and not (isinstance(feature_dim, tuple) and len(feature_dim) == 4):
            raise OptionError("network", "conv4 reads support images; this task family's features are not "
                                         "images (use mlp)")
        if not isinstance(filters, int) or isinstance(filters, bool) or filters < 1:
            raise OptionError("filters", f"expected a positive integer, got {filters!r}")
        if theta_at not in ("current", "next"):
            raise OptionError("theta_at", f"expected 'current' or 'next', got {theta_at!r}")
        self.lambda_grad, self.lambda_mean = lambda_grad, lambda_mean
        self.features, self.theta_at = features, theta_at
        self.needs_gradients_after_step = theta_at == "next"
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed + 7919)  # the network's initialisation depends on the run's seed only
        extra = int(features == "support+loss")
        if network == "conv4":
            self.net = ImageReweighting(feature_dim, filters, list(hidden or [32, 32]), extra)
        else:
            size = math.prod(feature_dim) if isinstance(feature_dim, tuple) else feature_dim
            self.net = MLP(size + extra, list(hidden or [32, 32]), 1)
        torch.random.set_rng_state(generator_state)
        last = (self.net.head if network == "conv4" else self.net)[-1]
        with torch.no_grad():
            last.weight.mul_(init_scale / max(last.weight.abs().max().item(), 1e-12))
            last.bias.fill_(1.0)
        self.bind(torch.cat([p.detach().reshape(-1) for p in self.net.parameters()]))
        self.ascent = ThetaAscent(self.theta, theta_optimizer, theta_lr)

    def bind(self, theta: torch.Tensor) -> None:
        """Make θ (flat) the network's storage: its weights and biases become views of θ, and the
        closed-form gradient is written into views of one flat buffer of the same layout."""
        self.theta, self.gradient = theta, torch.empty_like(theta)
        views, offset = [], 0
        for parameter in self.net.parameters():
            size = parameter.numel()
            parameter.data = theta[offset:offset + size].view_as(parameter)
            views.append(self.gradient[offset:offset + size].view_as(parameter))
            offset += size
        self.gradient_views = views
        if isinstance(self.net, ImageReweighting):
            return  # θ's gradient by autograd (``autograd_theta_gradients``)
        linears = [layer for layer in self.net if isinstance(layer, nn.Linear)]
        if len(linears) * 2 != len(views) or not all(isinstance(layer, (nn.Linear, nn.ReLU)) for layer in self.net):
            raise TypeError("SIMOL: the closed-form gradient is written for Linear/ReLU networks")
        # (weight, bias, ∂weight, ∂bias) per linear layer; a ReLU follows every layer but the last
        self.layers = [(layer.weight, layer.bias, views[2 * i], views[2 * i + 1]) for i, layer in enumerate(linears)]

    def to(self, device: torch.device | None = None, dtype: torch.dtype | None = None) -> SIMOL:
        """Move θ (and the optimiser's moments) to another device or precision."""
        self.bind(self.theta.to(device=device, dtype=dtype))
        self.ascent.to(self.theta)
        return self

    def weights(self, tasks: TaskGradients) -> torch.Tensor:
        """r_θ(τ) for the k tasks: the squared output of the re-weighting network."""
        return self.net(self.network_inputs(tasks)).squeeze(1).pow(2).to(tasks.grads.dtype)

    def objective(self, r: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
        """K̃_B(θ) of Eq. 13 from the weights and the Gram matrix of the task gradients."""
        k = r.shape[0]
        norm_sq = r @ gram @ r / k**2
        return -norm_sq / (2 * self.lambda_grad) - self.lambda_mean / 2 * (r.mean() - 1) ** 2

    def network_inputs(self, tasks: TaskGradients) -> torch.Tensor:
        if self.theta.device != tasks.features.device:
            self.to(device=tasks.features.device)
        inputs = tasks.features.to(self.theta.dtype)
        if self.features == "support+loss":
            inputs = torch.cat([inputs, tasks.losses[:, None].to(self.theta.dtype)], dim=1)
        return inputs

    def autograd_theta_gradients(self, tasks: TaskGradients) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``theta_gradients`` for the image network: K̃_B(θ) differentiated by autograd."""
        parameters = list(self.net.parameters())
        with torch.enable_grad():
            r = self.weights(tasks)
            grads = tasks.grads.detach()
            objective = self.objective(r, grads @ grads.T)
            gradients = torch.autograd.grad(objective, parameters)
        for view, gradient in zip(self.gradient_views, gradients):
            view.copy_(gradient)
        return objective.detach(), self.gradient, r.detach()

    @torch.no_grad()
    def theta_gradients(self, tasks: TaskGradients) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """K̃_B(θ) (a 0-dim tensor), ∇_θ K̃_B(θ) (flat, in θ's layout) and r_θ, by hand.

        Forward through the Linear/ReLU stack keeping the activations, ∂K̃/∂r in closed form,
        then the chain rule backwards: ∂K̃/∂out = 2·out·∂K̃/∂r, and per linear layer
        ∂W = δᵀh_in, ∂b = Σδ, δ_in = (δW)·[h_in > 0].
        """
        if isinstance(self.net, ImageReweighting):
            return self.autograd_theta_gradients(tasks)
        activations = [self.network_inputs(tasks)]
        last = len(self.layers) - 1
        for index, (weight, bias, _, _) in enumerate(self.layers):
            pre_activation = torch.addmm(bias, activations[-1], weight.T)
            activations.append(pre_activation if index == last else pre_activation.relu_())
        out = activations[-1].squeeze(1)
        r = (out * out).to(tasks.grads.dtype)  # K̃ in the gradients' precision, as ``objective``
        k = r.shape[0]
        gram_r = tasks.grads @ (tasks.grads.T @ r)  # G r without forming G
        mean_gap = r.mean() - 1
        objective = (r @ gram_r) * (-0.5 / (self.lambda_grad * k**2)) - self.lambda_mean / 2 * mean_gap.square()
        # 2·∂K̃/∂r = −2Gr/(λ'k²) − 2λ''(r̄ − 1)/k
        twice_d_r = gram_r.mul(-2.0 / (self.lambda_grad * k**2)).sub_(mean_gap, alpha=2.0 * self.lambda_mean / k)
        delta = (out * twice_d_r.to(out.dtype))[:, None]
        for index in range(last, -1, -1):
            weight, _, d_weight, d_bias = self.layers[index]
            below = activations[index]
            torch.mm(delta.T, below, out=d_weight)
            torch.sum(delta, 0, out=d_bias)
            if index > 0:  # through the ReLU below: pass δ where the unit was active
                delta = torch.ops.aten.threshold_backward(delta @ weight, below, 0)
        return objective, self.gradient, r

    def ascend(self, tasks: TaskGradients) -> tuple[torch.Tensor, torch.Tensor]:
        """One step θ ← θ + β' ∇_θ K̃_B(θ); returns K̃_B (0-dim) and r_θ(τ), both before the step."""
        objective, gradient, r = self.theta_gradients(tasks)
        self.ascent.step(gradient)
        return objective, r

    def combine(self, tasks: TaskGradients) -> Combined:
        if self.theta_at == "current":
            objective, r = self.ascend(tasks)
        else:
            with torch.no_grad():
                r = self.weights(tasks)
            objective = None
        weights = r / tasks.num_tasks
        summary = [r.mean(), *torch.aminmax(r)] + ([] if objective is None else [objective.to(r.dtype)])
        values = torch.stack(summary).tolist()  # one conversion to Python numbers per step
        stats = {"simol_r_mean": values[0], "simol_r_min": values[1], "simol_r_max": values[2]}
        if objective is not None:
            stats["simol_objective"] = values[3]
        return Combined(direction=weights @ tasks.grads, weights=weights, stats=stats)

    def after_step(self, tasks: TaskGradients) -> dict[str, float]:
        return {"simol_objective": self.ascend(tasks)[0].item()} if self.theta_at == "next" else {}

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.ascent.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])  # copies into the views of θ
        self.ascent.load_state_dict(state["optimizer"])
