"""Meta-reinforcement-learning tasks: run in a direction (SIMOL Figure 3, "HalfCheetah-Dir" and "Walker-Dir").

SIMOL §5.3: "each task corresponds to a random direction in the XY-plane, and the agent (Walker / HalfCheetah)
learns to run in that direction as far as possible. The reward is the average velocity minus control costs."
Both robots are planar, so a direction is forward or backward, d ∈ {−1, +1}, as in the environments of
Rothfuss et al. 2018 (ProMP: HalfCheetahRandDirec, Walker2DRandDirec), which SIMOL follows for the policy and
the baseline. The environments are Gymnasium's MuJoCo ``HalfCheetah-v5`` and ``Walker2d-v5`` with the forward
reward weighted by d, and ProMP's constants (notes/000_simol.md A17):

* half_cheetah: reward d·v_x − 0.05‖a‖² (ProMP's 0.5 · 0.1), never terminates, frame skip 5, 100 steps;
* walker2d: reward d·v_x + 1 − 10⁻³‖a‖², terminates unless 0.8 < height < 2 and |angle| < 1, frame skip 8,
  200 steps.

``data``: ``env`` (half_cheetah | walker2d), ``horizon`` (steps per episode; default the env's above),
``train_tasks`` / ``val_tasks`` / ``test_tasks`` (how many directions each split holds: training draws its
meta-batches from the train pool in order) and ``split_seed``. The split file stores the directions of every
split; there is no dataset to download (Gymnasium and MuJoCo are Python packages).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import verified_sidecar, write_arrays
from .checks import data_settings

SPLITS = ("train", "val", "test")
ENVS = {
    "half_cheetah": {"id": "HalfCheetah-v5", "horizon": 100,
                     "options": {"ctrl_cost_weight": 0.05}},
    "walker2d": {"id": "Walker2d-v5", "horizon": 200,
                 "options": {"ctrl_cost_weight": 1e-3, "healthy_reward": 1.0, "frame_skip": 8,
                             "healthy_z_range": (0.8, 2.0), "healthy_angle_range": (-1.0, 1.0),
                             "terminate_when_unhealthy": True}},
}
REQUIRED = ("env", "train_tasks", "val_tasks", "test_tasks")
DEFAULTS = {"horizon": None, "split_seed": 0}


def check_data(data: dict) -> dict:
    settings = data_settings(data, "direction_locomotion", REQUIRED, DEFAULTS,
                             integers={"train_tasks": 1, "val_tasks": 1, "test_tasks": 1, "split_seed": 0})
    if settings["env"] not in ENVS:
        raise ValueError(f"data.env: expected one of {sorted(ENVS)}, got {settings['env']!r}")
    if settings["horizon"] is None:
        settings["horizon"] = ENVS[settings["env"]]["horizon"]
    horizon = settings["horizon"]
    if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon < 1:
        raise ValueError(f"data.horizon: expected an integer >= 1, got {horizon!r}")
    return settings


def make_env(name: str, direction: float = 1.0):
    """The unwrapped Gymnasium environment of ``name`` running in ``direction`` (the sampler keeps the
    horizon itself and skips Gymnasium's checking wrappers, which cost as much as a MuJoCo step)."""
    import gymnasium

    spec = ENVS[name]
    return gymnasium.make(spec["id"], forward_reward_weight=float(direction), **spec["options"]).unwrapped


def set_direction(env, direction: float) -> None:
    """Point an environment of ``make_env`` the other way (the reward's forward weight)."""
    env._forward_reward_weight = float(direction)


def write_splits(path: Path | str, data: dict) -> dict:
    """The directions of every split, each ±1 with probability 1/2, drawn from ``split_seed``."""
    settings = check_data(data)
    rng = np.random.default_rng(settings["split_seed"])
    arrays = {f"{split}_directions": rng.choice(np.array([-1, 1], dtype=np.int8), size=settings[f"{split}_tasks"])
              for split in SPLITS}
    env = make_env(settings["env"])
    meta = {"family": "direction_locomotion", "env": settings["env"], "env_id": ENVS[settings["env"]]["id"],
            "horizon": settings["horizon"], "seed": settings["split_seed"],
            "obs_dim": int(env.observation_space.shape[0]), "act_dim": int(env.action_space.shape[0]),
            "sizes": {split: settings[f"{split}_tasks"] for split in SPLITS},
            "data_source": {settings["env"]: f"Gymnasium {ENVS[settings['env']]['id']} (MuJoCo), direction "
                                             "+1 / -1 (ProMP's constants)"}}
    env.close()
    return write_arrays(path, arrays, meta)


class Tasks:
    """The directions of a split file and the environment they run in."""

    def __init__(self, path: Path | str):
        self.meta = verified_sidecar(Path(path), "split")
        with np.load(path) as arrays:
            self.directions = {split: arrays[f"{split}_directions"].astype(np.float64) for split in SPLITS}
        self.env, self.horizon = self.meta["env"], self.meta["horizon"]
        self.io_dims = (self.meta["obs_dim"], self.meta["act_dim"])

    def num_tasks(self, split: str) -> int:
        return len(self.directions[split])

    def task_table(self, split: str) -> dict[str, np.ndarray]:
        return {"direction": self.directions[split]}
