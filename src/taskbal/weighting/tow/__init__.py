"""TOW: task weighting by trajectory optimisation (Nguyen, Do & Carneiro, TMLR 2023).

The weights u_t ∈ R^M of the M tasks of T consecutive meta-batches are the actions of a
finite-horizon control problem whose state x_t is the meta-parameter vector (Eqs. 6–7)::

    x_{t+1} = f(x_t, u_t)            one step of the outer optimiser along J_tᵀ u_t (J_t = task grads)
    c(x_t, u_t) = 1ᵀ ℓ_t(x_t) + β_u/2 ‖u_t − μ_u 1‖²        (no terminal cost, V_{T+1} = 0)

solved by iLQR (Algorithms 1–2, App. E): from the uniform nominal û_t = 1/M, linearise f and
quadraticise c about the nominal trajectory, run the Riccati-like backward pass for the feedback
law δu_t = K_t δx_t + k_t, then roll the *true* dynamics forward with backtracking line search on
ε (u_t = û_t + K_t(x_t − x̂_t) + ε k_t); repeat ``iterations`` times. The training loop then takes the
T outer steps with the planned weights; x_{T+1} starts the next window.

Linearisation (App. G). Both optimisers give F_x = I − diag(s) H_w and F_u = −diag(s) J_tᵀ, where
H_w = Σ_i û_i H_i is the Hessian of the weighted loss, replaced by the Gauss–Newton matrix
(Sec. 3.1), and s is a D-vector: s = α for SGD (Eqs. 91–93); for Adam (Eqs. 94–105, with m_{t−1},
v_{t−1} held constant and g = J_tᵀ û_t, m_t, v_t the moments after this step, b_j = 1 − β_j^step)::

    s = (α / b₁) · [ (1 − β₁) / den − m_t (1 − β₂) g / (den² √(b₂ v_t)) ],  den = √(v_t / b₂) + ε_adam

i.e. the quotient rule of Eq. 102 written for the diagonal of ∇_x (Eq. 105) and for ∇_u.
Cost (App. H): c_x = Σ_i g_i, C_xx = Σ_i G_i (Gauss–Newton), c_u = β_u(û − μ_u), C_uu = β_u I, C_xu = 0.

Approximations, as options:
- ``value``: ``diagonal`` (paper: V_t kept diagonal, "Newton's method separately for each
  coordinate") or ``full`` (App. B's exact D×D V_t).
- ``curvature``: ``diagonal`` (paper: the diagonal of the Gauss–Newton matrices in F_x and C_xx) or
  ``full`` (the D×D Gauss–Newton matrices; App. B says "full Gauss–Newton matrix" without saying
  whether F_x and C_xx were also full). Both ``full`` options cost O(D²) memory.
The Gauss–Newton matrix of task i is J_oᵀ H_o J_o with J_o the Jacobian of the query outputs and H_o
the Hessian of the loss w.r.t. the outputs (MSE: 2/(n·out) I; cross-entropy: (diag p − ppᵀ)/n per
query point). ``gauss_newton: adapted`` (default; the authors' code, which is first-order MAML) takes
J_o w.r.t. the adapted weights (∂φ/∂x = I); ``meta`` takes it through the adaptation (with
second-order MAML: the Gauss–Newton matrix of the meta-loss itself; costs a second adaptation).
The meta-gradients are always the learner's own (second-order unless ``learner.first_order``).
``batch_statistics`` (networks with BatchNorm on batch statistics, conv4): ``held`` (default) takes J_o with
each task's statistics fixed at their values on its episode, so each query point is seen on its own — the
Gauss–Newton diagonal of the network in evaluation mode, which is what the paper's "single backward pass"
with BackPACK computes; ``coupled`` differentiates through the statistics as well (the exact Jacobian of
the training-mode network, n·c output probes through the backward; the authors' code takes that
Jacobian in chunks of 40 query points, so its statistics are those of each chunk). ProtoNet's query
outputs depend on the support set, so its points are copied with the whole support set each
(``per_query_point_gauss_newton``).

Choices where the paper is ambiguous, the consequential ones as options:
- θ (Eq. 74, Alg. 2 l. 17) prints θ_t = θ_{t+1} − q_uᵀ Q_uu q_u; the first-order decrease of Lemma 12 is
  Σ q_uᵀ k_t = −Σ q_uᵀ Q_uu⁻¹ q_u. ``theta: inverse`` (default) or ``printed``.
- Line search (Eq. 72 / Alg. 1 l. 17): ``line_search: paper`` halves ε from 1 until
  J(u) − J(û) ≤ ½ ε θ₁ and u ≥ 0; below ``min_step`` the nominal (the last accepted trajectory,
  uniform on the first iteration) is kept and the iterations stop (a repeat would be identical).
  A trial is abandoned at its first negative weight. ``none`` takes ε = 1 unconditionally (the authors' code,
  whose line-search loop breaks after the first trial and never checks u ≥ 0).
- ``final_pass``: ``simulated`` (paper) rolls the last forward pass inside the planner and the training
  loop then replays the accepted weights; ``live`` lets the training loop *be* the last forward pass:
  at each of the T steps the weights are û_t + K_t(x_t − x̂_t) + k_t at the loop's actual x_t (ε = 1,
  no line search on the last iteration, negative weights clipped to 0). That saves one rollout of T
  meta-gradient evaluations per window (benchmarks/bench_tow.py); it keeps the gains K_t (T·M·D numbers).
- The dynamics replay the training loop's own torch Adam (lr, betas, eps from its optimiser,
  ε outside the square root as in PyTorch and the authors' code; the paper writes √(v̂ + ε)); the
  bias-correction step is the optimiser's global step count, and its moments carry over between windows.
- T (``horizon``): the paper gives 10 or 5 per dataset and reports M = 10, T = 5; default 5. The
  window is cut short at the end of training.
- Nominal actions û = 1/M, μ_u = 1/M (``prior_mean`` overrides), β_u = 10 (``prior_precision``), 2 iLQR
  iterations (``iterations``): the paper's values. No terminal cost (paper), so the last meta-batch of
  a window keeps uniform weights on the first iteration, and ``horizon: 1`` is uniform weighting.

Where it plugs in: the training loop hands over the learner, the outer optimiser and the batches of the
next T iterations (TaskGradients.learner / optimizer / upcoming); at the first iteration of a window TOW
plans, and every iteration returns the planned weights' combination of the loop's own meta-gradients.
Batch 1 at x_1 reuses the loop's evaluation; the others are evaluated by ``evaluate_learner``, all tasks
of a meta-batch at once. The plan is the weighting's state (resume mid-window is exact).

Work that cannot change the plan is skipped: stage 1's expansion has no F_x, C_xx (x_1 is given, so
δx_1 = 0 and K_1 only ever multiplies 0; K_1 = 0 is returned) and hence no curvature and no re-adaptation
of batch 1; a rollout's last stage runs the backward of its meta-gradients only if the trajectory is
expanded again (a rejected line-search trial never does), and x_{T+1} is not computed. For networks that
map query points independently (no batch statistics, no dropout; ``points_independent``) the curvature
comes from ordinary backward passes per output column, with one weight copy per query point
(``per_point_gauss_newton``; the MLP's diagonal in closed form per linear layer, Σ_p δ_p² h_p²), instead
of a Jacobian vmapped over the n·c output probes; conv4 does the same with its BatchNorm statistics held
(``batch_statistics: held``); other networks keep the Jacobian, ``PROBE_CHUNK`` probes per backward.
With ``value: full`` and a diagonal F_x the backward pass scales rows and columns instead of D×D products.

Cost per outer step (benchmarks/bench_tow.py measures it against plain MAML; the last measured
ratios are in benchmarks/README.md; the paper reports 5.6–9.5× plain MAML, Table 2): with the paper's
defaults the time goes mostly to rejected line-search rollouts, ``value: full`` costs more, and
``final_pass: live`` with fewer iterations less. The live 1-iteration variant cannot go below about
1 + (T − 1)/T evaluations per step (the nominal rollout re-evaluates batches 2..T at the uniform
trajectory); the rest is the curvature of T − 1 stages, the backward pass and the bookkeeping of the plan.

Modules: ``ilqr`` (the solver, which knows nothing of learners), ``dynamics`` (the outer optimiser's
step), ``curvature`` (Gauss–Newton matrices), ``problem`` (stage evaluations of a learner and the control
problem on meta-batches), ``weighting`` (the TOW weighting).
"""
from .weighting import TOW

__all__ = ["TOW"]
