"""The episodic meta-learning runner: the one training loop and the meta-test evaluation."""
from __future__ import annotations

from ..evaluate import evaluate
from ..learners import REGISTRY as LEARNERS
from ..learners.maml import check_inner_options
from ..options import check_options
from ..train import meta_settings, train
from ..weighting import REGISTRY as WEIGHTINGS

__all__ = ["train", "evaluate", "check_experiment"]

# The options every gradient-based learner shares, checked before anything runs (``check_inner_options``).
INNER_OPTIONS = ("inner_steps", "inner_lr", "inner_optimizer", "loss", "adam_betas", "adam_eps", "first_order")


def check_experiment(experiment: dict) -> None:
    """The outer and evaluation sections, the learner's and the weighting's names and option names,
    and the values of the learner options they share; before anything runs."""
    import inspect

    from ..models import check_model_options

    outer, _ = meta_settings(experiment)
    check_model_options(experiment["model"])
    pool = experiment["data"].get("train_tasks")
    if isinstance(pool, int) and outer["meta_batch"] > pool:
        raise ValueError(f"outer.meta_batch: {outer['meta_batch']} tasks per batch from a training pool of "
                         f"{pool} (data.train_tasks) would repeat tasks within a batch; use at most {pool}")
    for section, registry, skip in (("learner", LEARNERS, 1), ("weighting", WEIGHTINGS, 3)):
        name = experiment[section]["name"]
        if name not in registry:
            raise ValueError(f"{section}.name: unknown {section} {name!r}; known: {sorted(registry)}")
        options = {k: v for k, v in experiment[section].items() if k != "name"}
        check_options(section, registry[name], options, skip)
    parameters = inspect.signature(LEARNERS[experiment["learner"]["name"]].__init__).parameters
    values = {key: p.default for key, p in parameters.items() if p.default is not inspect.Parameter.empty}
    values.update(experiment["learner"])
    if all(key in values for key in INNER_OPTIONS[:4]):
        check_inner_options(*(values[key] for key in INNER_OPTIONS[:4]),
                            **{key: values[key] for key in INNER_OPTIONS[4:] if key in values})
    penalty = experiment["learner"].get("penalty")
    if penalty is not None:  # built as the learner will build it: its names and values
        from ..learners.nash_penalty import build_penalty

        if not isinstance(penalty, dict):
            raise ValueError(f"learner.penalty: expected a mapping {{name: centroid|robust, weight: w, ...}}, "
                             f"got {penalty!r}")
        build_penalty(**penalty)
