"""Meta-reinforcement learning: MAML-VPG with a task weighting (SIMOL Figure 3: SIMOL-VPG against MAML-VPG on
HalfCheetah-Dir and Walker-Dir; data family ``direction_locomotion``).

Each iteration draws ``rl.meta_batch`` directions from the training pool (in order, each visited once before
any twice), samples ``rl.rollouts`` episodes per task with the current policy, adapts it per task with one VPG
step (``taskbal.rl.maml_vpg``), samples as many episodes with each adapted policy, and hands the per-task
meta-gradients of the post-update surrogate losses to the weighting (``mean``: MAML; ``simol``: SIMOL's
re-weighting network, fed each task's pre-update path statistics); Adam takes the combined step.

Settings (``rl``), where SIMOL is silent ProMP's VPG-MAML values (notes/000_simol.md A17): ``iterations``,
``meta_batch`` (ProMP: 40), ``rollouts`` per task (20), ``inner_lr`` 0.1, ``outer_lr`` 1e-3 (Adam),
``discount`` 0.99, ``normalize_advantages`` true, ``hidden`` [64, 64] tanh, ``init_std`` 1.0, ``first_order``
false (second-order through the inner step), ``curve_every`` 10, ``eval_rollouts`` (default ``rollouts``).
One inner step (ProMP's num_inner_grad_steps = 1; more would sample again after each step).

curve.csv: per recorded iteration the mean over the window's iterations of the pre- and post-update returns
(undiscounted, per episode, over the meta-batch's tasks: what ProMP logs as Step_0 / Step_1-AverageReturn and
what SIMOL's Figure 3 plots) and the weights. evaluate: every test direction, adapted from the trained policy
with ``eval_rollouts`` episodes, one eval.csv row per task (direction, pre_return, post_return).

Runs on the CPU: MuJoCo steps on the CPU and the policy is a few thousand parameters; ``device`` is not used.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..artifacts import EVAL as EVAL_FILE
from ..artifacts import EVAL_SUMMARY as EVAL_SUMMARY_FILE
from ..data.direction_locomotion import Tasks, check_data, make_env, set_direction
from ..io import atomic_path, write_json
from ..loop import fit, step_generator
from ..options import check_options, options_of, section_settings
from ..rl.maml_vpg import adapt, surrogate_loss, task_advantages, task_features
from ..rl.policy import flatten, init_policy
from ..rl.sampler import sample
from ..weighting import REGISTRY, TaskGradients, build_weighting

REQUIRED = ("iterations", "meta_batch", "rollouts")
DEFAULTS = {"inner_lr": 0.1, "outer_lr": 1e-3, "discount": 0.99, "normalize_advantages": True, "hidden": [64, 64],
            "init_std": 1.0, "first_order": False, "curve_every": 10, "eval_rollouts": None}
# What the loop can hand a weighting here: no re-evaluation at other parameters (``losses_at``), no second
# pass after the step, no planning over upcoming batches (each costs fresh rollouts).
READABLE = frozenset(("losses", "grads", "features", "params", "iteration", "generator", "task_ids",
                      "num_pool_tasks"))


def settings(experiment: dict) -> dict:
    conf = section_settings(experiment, "rl", "meta_rl", REQUIRED, DEFAULTS,
                            positive_integers=("iterations", "meta_batch", "rollouts", "curve_every"))
    for key in ("inner_lr", "outer_lr", "init_std"):
        if not isinstance(conf[key], (int, float)) or conf[key] <= 0:
            raise ValueError(f"rl.{key}: must be a number > 0, got {conf[key]!r}")
    if not isinstance(conf["discount"], (int, float)) or not 0 < conf["discount"] <= 1:
        raise ValueError(f"rl.discount: must be in (0, 1], got {conf['discount']!r}")
    hidden = conf["hidden"]
    if not isinstance(hidden, list) or not hidden or any(not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(f"rl.hidden: expected a non-empty list of positive integers, got {hidden!r}")
    if conf["eval_rollouts"] is None:
        conf["eval_rollouts"] = conf["rollouts"]
    elif not isinstance(conf["eval_rollouts"], int) or conf["eval_rollouts"] < 1:
        raise ValueError(f"rl.eval_rollouts: expected an integer >= 1, got {conf['eval_rollouts']!r}")
    return conf


def check_experiment(experiment: dict) -> None:
    check_data(experiment["data"])
    settings(experiment)
    name = experiment["weighting"]["name"]
    if name not in REGISTRY:
        raise ValueError(f"weighting.name: unknown method {name!r}; known: {sorted(REGISTRY)}")
    method = REGISTRY[name]
    if not method.reads <= READABLE or method.plans_ahead or method.needs_gradients_after_step:
        raise ValueError(f"weighting.name: {name!r} needs what meta-RL cannot give without fresh rollouts "
                         f"(it reads {sorted(method.reads - READABLE) or 'the next batches'})")
    options = {k: v for k, v in experiment["weighting"].items() if k != "name"}
    check_options("weighting", method, options, skip=3)
    if options.get("theta_at") == "next":
        raise ValueError("weighting.theta_at: 'next' would need the gradients again after the step (fresh "
                         "rollouts); use 'current'")


def reset_seeds(seed: int, iteration: int, phase: int, count: int) -> np.ndarray:
    """Environment reset seeds that depend only on (seed, iteration, phase): a resumed run sees the same."""
    return np.random.SeedSequence([seed, iteration, phase]).generate_state(count)


def adapted_policies(params, pre, conf) -> list:
    """Per task: its parameters θ' adapted on its pre-update paths (a function of θ unless first order)."""
    return [adapt(params, pre, t, task_advantages(pre, t, conf["discount"], conf["normalize_advantages"]),
                  conf["inner_lr"], create_graph=not conf["first_order"])
            for t in range(pre.rewards.shape[0])]


class Environments:
    """``count`` environments of one kind, reused from iteration to iteration and pointed per task."""

    def __init__(self, name: str, count: int):
        self.envs = [make_env(name) for _ in range(count)]

    def pointed(self, directions: np.ndarray, rollouts: int) -> list:
        for j, env in enumerate(self.envs[:len(directions) * rollouts]):
            set_direction(env, directions[j // rollouts])
        return self.envs

    def close(self) -> None:
        for env in self.envs:
            env.close()


class MetaRLRun:
    """MAML-VPG with a weighting on one direction-locomotion task family; a trainable of taskbal.loop."""

    def __init__(self, experiment: dict, seed: int, split_path: Path):
        self.conf, self.seed = settings(experiment), seed
        self.tasks = Tasks(split_path)
        self.iterations, self.curve_every = self.conf["iterations"], self.conf["curve_every"]
        obs_dim, act_dim = self.tasks.io_dims
        self.params = init_policy(obs_dim, act_dim, self.conf["hidden"], self.conf["init_std"],
                                  torch.Generator().manual_seed(seed))
        self.num_params = sum(p.numel() for p in self.params)
        options = {k: v for k, v in experiment["weighting"].items() if k != "name"}
        self.weighting = build_weighting(experiment["weighting"]["name"], self.num_params, obs_dim + act_dim + 1, seed,
                                         **options)
        self.optimizer = torch.optim.Adam(self.params, lr=self.conf["outer_lr"])
        self.envs = Environments(self.tasks.env, self.conf["meta_batch"] * self.conf["rollouts"])

    def batch_ids(self, iteration: int) -> np.ndarray:
        k, pool = self.conf["meta_batch"], self.tasks.num_tasks("train")
        return (iteration * k + np.arange(k)) % pool

    def step(self, iteration: int) -> dict:
        conf, rollouts = self.conf, self.conf["rollouts"]
        ids = self.batch_ids(iteration)
        directions = self.tasks.directions["train"][ids]
        envs = self.envs.pointed(directions, rollouts)
        generator = step_generator(self.seed, iteration)
        count = len(ids) * rollouts
        pre = sample(envs, [self.params] * len(ids), rollouts, self.tasks.horizon,
                     reset_seeds(self.seed, iteration, 0, count), generator)
        adapted = adapted_policies(self.params, pre, conf)
        post = sample(envs, [[p.detach() for p in theta] for theta in adapted], rollouts, self.tasks.horizon,
                      reset_seeds(self.seed, iteration, 1, count), generator)
        losses, grads = [], []
        for t, theta in enumerate(adapted):
            advantages = task_advantages(post, t, conf["discount"], conf["normalize_advantages"])
            loss = surrogate_loss(theta, post, t, advantages)
            grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, self.params)]))
            losses.append(loss.detach())
        tasks = TaskGradients(losses=torch.stack(losses), grads=torch.stack(grads),
                              features=torch.stack([task_features(pre, t) for t in range(len(ids))]),
                              params=flatten(self.params), iteration=iteration,
                              generator=step_generator(self.seed, iteration), task_ids=torch.as_tensor(ids),
                              num_pool_tasks=self.tasks.num_tasks("train"))
        combined = self.weighting.combine(tasks.only(self.weighting.reads))
        self.apply(combined.direction)
        weights = combined.weights.detach()
        return {"pre_update_return": float(pre.returns().mean()), "post_update_return": float(post.returns().mean()),
                "post_update_loss": float(tasks.losses.mean()), "weight_min": float(weights.min()),
                "weight_max": float(weights.max()), **combined.stats}

    def apply(self, direction: torch.Tensor) -> None:
        self.optimizer.zero_grad()
        offset = 0
        for p in self.params:
            p.grad = direction[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        self.optimizer.step()

    def curve_row(self, iteration: int, window: list[dict]) -> dict:
        means = {key: float(np.mean([w[key] for w in window])) for key in window[0]} if window else {}
        return {"iteration": iteration, **means}

    def state_dict(self) -> dict:
        return {"params": [p.detach().clone() for p in self.params], "optimizer": self.optimizer.state_dict(),
                "weighting": self.weighting.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for p, saved in zip(self.params, state["params"]):
                p.copy_(saved)
        self.optimizer.load_state_dict(state["optimizer"])
        self.weighting.load_state_dict(state["weighting"])

    def final_state(self) -> dict:
        self.envs.close()
        return {"params": [p.detach().clone() for p in self.params], "weighting": self.weighting.state_dict(),
                "settings": self.conf}

    def summary(self, rows: list[dict]) -> dict:
        last = rows[-1]
        return {key: last[key] for key in ("pre_update_return", "post_update_return") if key in last}


def train(experiment: dict, seed: int, split_path: Path, out_dir: Path, *, device: str = "auto",
          checkpoint_every: int = 500, progress: bool = True, stop_after: int | None = None) -> dict:
    """One MAML-VPG run through taskbal.loop, on the CPU (``device`` is not used)."""
    check_experiment(experiment)
    with options_of("weighting"):
        return fit(lambda: MetaRLRun(experiment, seed, Path(split_path)), experiment, seed, out_dir,
                   checkpoint_every=checkpoint_every, stop_after=stop_after, progress=progress)


def evaluate(final_path: Path, split_path: Path, out_dir: Path, *, device: str = "auto") -> dict:
    """Adapt the trained policy to every test direction and record the returns before and after."""
    final = torch.load(final_path, map_location="cpu", weights_only=False)
    conf, tasks = final["settings"], Tasks(split_path)
    params = [p.clone().requires_grad_() for p in final["params"]]
    directions = tasks.directions["test"]
    rollouts, count = conf["eval_rollouts"], len(directions) * conf["eval_rollouts"]
    envs = Environments(tasks.env, count)
    generator = torch.Generator().manual_seed(int(final["seed"]) + 10**6)
    pre = sample(envs.pointed(directions, rollouts), [params] * len(directions), rollouts, tasks.horizon,
                 reset_seeds(final["seed"], 10**9, 0, count), generator)
    adapted = adapted_policies(params, pre, {**conf, "first_order": True})
    post = sample(envs.envs, [[p.detach() for p in theta] for theta in adapted], rollouts, tasks.horizon,
                  reset_seeds(final["seed"], 10**9, 1, count), generator)
    envs.close()
    frame = pd.DataFrame({"task": np.arange(len(directions)), "direction": directions,
                          "pre_return": pre.returns().mean(1).numpy(), "post_return": post.returns().mean(1).numpy()})
    out_dir = Path(out_dir)
    with atomic_path(out_dir / EVAL_FILE) as tmp:
        frame.to_csv(tmp, index=False)
    summary = {"test_tasks": len(directions), "seed": final["seed"],
               "pre_return_mean": float(frame["pre_return"].mean()),
               "post_return_mean": float(frame["post_return"].mean())}
    write_json(out_dir / EVAL_SUMMARY_FILE, summary)
    return summary
