"""Meta-RL (SIMOL Figure 3) against independent references: torch.distributions for the policy's likelihood,
NumPy's least squares for the linear baseline, a loop for the discounted returns, finite differences for the
MAML-VPG meta-gradient, MuJoCo's own velocity for the direction reward."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from taskbal.data.direction_locomotion import make_env, set_direction
from taskbal.rl.baseline import features, fit_predict
from taskbal.rl.maml_vpg import adapt, discounted_returns, surrogate_loss, task_advantages
from taskbal.rl.policy import init_policy, log_likelihood, policy_mean
from taskbal.rl.sampler import Paths, sample


def random_paths(generator, tasks=2, rollouts=3, horizon=6, obs_dim=4, act_dim=2, dead_after=None) -> Paths:
    mask = torch.ones(tasks, rollouts, horizon, dtype=torch.float64)
    if dead_after is not None:
        mask[0, 0, dead_after:] = 0  # one episode ended early
    return Paths(torch.randn(tasks, rollouts, horizon, obs_dim, generator=generator, dtype=torch.float64),
                 torch.randn(tasks, rollouts, horizon, act_dim, generator=generator, dtype=torch.float64),
                 torch.randn(tasks, rollouts, horizon, generator=generator, dtype=torch.float64) * mask, mask)


def test_log_likelihood_is_the_diagonal_gaussian_of_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    params = init_policy(5, 3, [7, 6], 0.7, generator)
    obs, actions = torch.randn(11, 5, dtype=torch.float64), torch.randn(11, 3, dtype=torch.float64)
    reference = torch.distributions.Normal(policy_mean(params, obs), params[-1].exp()).log_prob(actions).sum(-1)
    torch.testing.assert_close(log_likelihood(params, obs, actions), reference)
    assert params[-1].exp().detach().numpy() == pytest.approx(0.7)


def test_discounted_returns_sum_the_live_rewards_ahead():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    got = discounted_returns(rewards, mask, 0.5)
    assert got[0].tolist() == pytest.approx([1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0, 0.0])


def test_linear_baseline_is_the_ridge_least_squares_fit_of_numpy():
    generator = torch.Generator().manual_seed(1)
    paths = random_paths(generator, dead_after=4)
    obs, mask = paths.observations[0] * 20, paths.mask[0]  # some beyond the ±10 clip
    returns = discounted_returns(paths.rewards[0], mask, 0.99)
    values = fit_predict(obs, returns, mask)
    live = mask.numpy().reshape(-1) > 0
    o = np.clip(obs.numpy(), -10, 10).reshape(-1, obs.shape[-1])
    t = np.tile(np.arange(obs.shape[1]) / 100.0, obs.shape[0])[:, None]
    design = np.concatenate([o, o**2, t, t**2, t**3, np.ones_like(t)], axis=1)
    a, b = design[live], returns.numpy().reshape(-1)[live]
    coefficients = np.linalg.solve(a.T @ a + 1e-5 * np.eye(a.shape[1]), a.T @ b)
    np.testing.assert_allclose(values.numpy().reshape(-1), design @ coefficients, rtol=1e-6, atol=1e-8)
    assert features(obs).shape == (*obs.shape[:-1], 2 * obs.shape[-1] + 4)


def test_advantages_are_normalised_over_the_live_steps_only():
    paths = random_paths(torch.Generator().manual_seed(2), dead_after=2)
    advantages = task_advantages(paths, 0, 0.99, normalize=True)
    live = advantages[paths.mask[0] > 0]
    assert float(live.mean()) == pytest.approx(0.0, abs=1e-9) and float(live.std(unbiased=False)) == pytest.approx(1.0)
    assert (advantages[paths.mask[0] == 0] == 0).all()


@pytest.mark.parametrize("create_graph", [True, False])
def test_meta_gradient_matches_finite_differences_of_the_adapted_surrogate(create_graph):
    """With the paths and advantages fixed, the meta-loss L(θ − α∇L(θ; D); D') is a function of θ alone: the
    second-order meta-gradient is its derivative (central differences along random directions); the first-order
    one is ∇L at θ' (the inner step's Jacobian taken as I)."""
    generator = torch.Generator().manual_seed(3)
    params = init_policy(4, 2, [5], 1.0, generator)
    pre, post = random_paths(generator, dead_after=3), random_paths(generator)
    a_pre, a_post = task_advantages(pre, 1, 0.9, True), task_advantages(post, 1, 0.9, True)

    def meta_loss(theta):
        return surrogate_loss(adapt(theta, pre, 1, a_pre, 0.1, create_graph=True), post, 1, a_post)

    adapted = adapt(params, pre, 1, a_pre, 0.1, create_graph=create_graph)
    grads = torch.autograd.grad(surrogate_loss(adapted, post, 1, a_post), params)
    if create_graph:
        for _ in range(3):
            direction = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in params]
            eps = 1e-5
            plus = meta_loss([(p + eps * d).detach().requires_grad_() for p, d in zip(params, direction)])
            minus = meta_loss([(p - eps * d).detach().requires_grad_() for p, d in zip(params, direction)])
            numeric = float((plus - minus) / (2 * eps))
            analytic = float(sum((g * d).sum() for g, d in zip(grads, direction)))
            assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8)
    else:
        at_adapted = [p.detach().requires_grad_() for p in adapted]
        expected = torch.autograd.grad(surrogate_loss(at_adapted, post, 1, a_post), at_adapted)
        for g, e in zip(grads, expected):
            torch.testing.assert_close(g, e)


def test_the_direction_weights_mujocos_forward_velocity():
    """Reward d·v_x − 0.05‖a‖² on the cheetah, v_x being MuJoCo's own x velocity over the frame skip."""
    env = make_env("half_cheetah")
    for direction in (1.0, -1.0):
        set_direction(env, direction)
        env.reset(seed=0)
        action = np.full(env.action_space.shape, 0.5)
        _, reward, terminated, _, info = env.step(action)
        assert reward == pytest.approx(direction * info["x_velocity"] - 0.05 * float(action @ action))
        assert not terminated
    env.close()


def test_sampler_keeps_episodes_apart_and_masks_a_fallen_walker():
    envs = [make_env("walker2d") for _ in range(4)]
    params = init_policy(17, 6, [8], 3.0, torch.Generator().manual_seed(4))  # wide noise: it falls fast
    paths = sample(envs, [params, params], 2, 60, np.arange(4), torch.Generator().manual_seed(5))
    assert paths.observations.shape == (2, 2, 60, 17) and paths.actions.shape == (2, 2, 60, 6)
    lived = paths.mask.sum(-1)
    assert (lived < 60).any()  # at least one fell before the horizon
    for t in range(2):
        for r in range(2):
            n = int(lived[t, r])
            assert (paths.mask[t, r, :n] == 1).all() and (paths.mask[t, r, n:] == 0).all()
            assert (paths.rewards[t, r, n:] == 0).all()
    again = sample(envs, [params, params], 2, 60, np.arange(4), torch.Generator().manual_seed(5))
    torch.testing.assert_close(again.rewards, paths.rewards)  # the same seeds give the same episodes
    for env in envs:
        env.close()


@pytest.mark.slow
def test_tiny_scale_builds_simol_figure3(repo, tool_env, tmp_path):
    """SIMOL Figure 3 through its named rule: MAML-VPG and SIMOL-VPG on both environments, the curves drawn and
    the claims judged on the runs' training curves and test directions."""
    import json
    import subprocess

    import pandas as pd

    from workspaces import copy_workflow, snakemake

    work = copy_workflow(repo, tmp_path)
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    snakemake(["--config", "scale=tiny", "--quiet", "--", "simol_figure3"], work, tool_env)
    record = json.loads((work / "results/figures/tiny/simol_figure3.json").read_text())
    runs = record["provenance"]["runs"].split(", ")
    assert len(runs) == 4 and all(run.startswith("direction_locomotion-") for run in runs)
    for run in runs:
        curve = pd.read_csv(work / f"results/runs/tiny/{run}/seed0/curve.csv")
        assert list(curve["iteration"]) == [0, 1, 2] and curve["post_update_return"].iloc[1:].notna().all()
        evaluated = pd.read_csv(work / f"results/runs/tiny/{run}/seed0/eval.csv")
        assert len(evaluated) == 2 and set(evaluated["direction"]) <= {-1.0, 1.0}
    assert len(record["claims"]) == 4 and all(c["verdict"] in ("holds", "does not hold") for c in record["claims"])
    assert "Gymnasium" in (work / "results/figures/tiny/simol_figure3.md").read_text()  # where the tasks came from
