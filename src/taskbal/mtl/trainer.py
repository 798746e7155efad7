"""Multi-task learning: a shared encoder, one head per task, any thesis method, trained by taskbal.loop.

Every MTL method is a *step* object with ``step(iteration) -> stats`` and a resumable state:

  * a registered weighting (``weighting.name``: mean = EW, mgda, pcgrad, cagrad, …): single-level
    training, the per-task shared gradients combined by taskbal.weighting (mtl/weighted.py);
  * ``normal``: NORMAL's ODE neck and task positions (mtl/normal.py), EW or any ``combiner``;
  * ``moml`` / ``forum``: bi-level methods (mtl/moml.py, mtl/forum.py) on a network MOBLO problem
    (``mtl.bilevel``: hyper_cleaning or task_weighting, mtl/problems.py); the network's parameters
    are the problem's ω and are copied back into the network after every step.

``Trainer`` is the trainable the one loop (taskbal.loop) runs: deterministic batches (mtl/data.py),
a curve row every ``curve_every`` iterations (means of the step statistics since the last row, plus
per-task accuracy and loss on ``curve_split``), and model selection on ``select_on`` (mean accuracy;
the thesis' hyper-cleaning selects on its second validation set). The loop adds checkpoints, resume
and the outputs.

Experiment section ``mtl`` (defaults in brackets):
    iterations        training (or UL) iterations                                  [required]
    encoder           mlp | resnet18 (mtl/model.py)                               [mlp]
    hidden            mlp: widths of its Linear+ReLU layers; resnet18: widths of the
                      Linear+BN+ReLU+Dropout block after the pooled features       [[512, 256]]
    weights           resnet18: a torchvision state-dict file (ImageNet-pretrained;
                      the train rule asks rule `weights` for it), null: random init [null]
    sharing           hard (one shared encoder) | none (STL: an encoder per task)    [hard]
    head_hidden       widths of Linear+ReLU layers in every head before its Linear [[]]
    input_norm        imagenet | none: the ResNet encoders' input normalisation       [imagenet]
    batch_size        per-task mini-batch (single-level and the LL of bi-level)    [100]
    optimizer, lr, weight_decay   single-level optimiser (adam | sgd)              [adam, 1e-3, 0]
    lr_decay_every, lr_decay      the network's learning rate times lr_decay every that many
                                  iterations (StepLR; 0: constant)                  [0, 0.5]
    lr_plateau        {factor, patience, min_lr}: the network's learning rate times factor when the
                      selection score on select_on has not improved for patience curve
                      points (ReduceLROnPlateau); null: none                        [null]
                      (both schedules act on the optimisers of the network's parameters:
                      the single-level step's, FORUM's ω optimiser; MOML's ω has none)
    scale             mean | sum: the direction of the mean or the summed loss      [mean]
    heads             weighted | unit: head i's gradient scaled by w_i or not        [weighted]
    curve_every       iterations between curve rows                               [50]
    curve_split       split evaluated at every curve row (null or false: none)     [val]
    select_on         split whose mean accuracy (classification) or mean normalised MAE
                      (regression) picks the reported model (null: last)          [null]
    bilevel           hyper_cleaning | task_weighting (moml / forum only)          [hyper_cleaning]
    upper_split       UL data of bi-level methods                                  [val]
    upper_batch_size  per-task UL mini-batch (<= 0: the whole split)               [100]
    lower_batches     iteration | step: one LL batch per UL iteration, or per LL step [iteration]
    alpha_init        hyper-cleaning's initial per-sample logit                    [0.0]
    eval_split        split that evaluate() reports                                [test]
"""
from __future__ import annotations

import copy
import inspect
import math
from pathlib import Path

import numpy as np
import torch

from ..data import family_module
from ..loop import fit
from ..options import section_settings
from ..weighting import REGISTRY as WEIGHTINGS
from .data import MultiTaskData
from .forum import FORUM
from .model import ENCODERS, SHARING, MultiTaskNet, encoder_width
from .moml import MOML, check_combiner
from .normal import NECK_OPTIONS, NORMAL, NORMAL_OPTIONS, NormalNeck, split_options
from .objectives import macro_f1  # noqa: F401 (where the metric lived before the objectives)
from .problems import LOWER_BATCHES, PROBLEMS, HyperCleaning
from .weighted import WeightedMTL

BILEVEL = {"moml": MOML, "forum": FORUM}
DEFAULTS = {"encoder": "mlp", "hidden": [512, 256], "weights": None, "sharing": "hard", "head_hidden": [],
            "input_norm": "imagenet", "lr_decay_every": 0, "lr_decay": 0.5, "lr_plateau": None,
            "batch_size": 100, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
            "scale": "mean", "heads": "weighted", "curve_every": 50, "curve_split": "val", "select_on": None,
            "bilevel": "hyper_cleaning", "upper_split": "val", "upper_batch_size": 100, "alpha_init": 0.0,
            "lower_batches": "iteration", "eval_split": "test"}
REQUIRED = ("iterations",)


# --------------------------------------------------------------------------- configuration
def settings(experiment: dict) -> dict:
    conf = section_settings(experiment, "mtl", "mtl", REQUIRED, DEFAULTS,
                            positive_integers=("iterations", "curve_every", "batch_size"))
    if not isinstance(conf["upper_batch_size"], int):
        raise ValueError(f"mtl.upper_batch_size: must be an integer, got {conf['upper_batch_size']!r}")
    if not conf["lr"] > 0:
        raise ValueError(f"mtl.lr: must be > 0, got {conf['lr']}")
    if conf["weight_decay"] < 0:
        raise ValueError(f"mtl.weight_decay: must be >= 0, got {conf['weight_decay']}")
    if conf["bilevel"] not in PROBLEMS:
        raise ValueError(f"mtl.bilevel: unknown {conf['bilevel']!r}; known: {sorted(PROBLEMS)}")
    every = conf["lr_decay_every"]
    if not isinstance(every, int) or isinstance(every, bool) or every < 0:
        raise ValueError(f"mtl.lr_decay_every: an integer >= 0 (0: never), got {conf['lr_decay_every']!r}")
    if not 0 < conf["lr_decay"] <= 1:
        raise ValueError(f"mtl.lr_decay: a factor in (0, 1], got {conf['lr_decay']!r}")
    plateau = conf["lr_plateau"]
    if plateau is not None:
        if not isinstance(plateau, dict) or set(plateau) != {"factor", "patience", "min_lr"}:
            raise ValueError(f"mtl.lr_plateau: {{factor, patience, min_lr}} or null, got {plateau!r}")
        if conf["lr_decay_every"]:
            raise ValueError("mtl.lr_plateau: one learning-rate schedule at a time (mtl.lr_decay_every is set)")
        if conf["select_on"] is None:
            raise ValueError("mtl.lr_plateau: follows the selection score, so it needs mtl.select_on")
    if conf["curve_split"] is False:  # `false`: no split along training (a null in a table's `set` removes the key)
        conf["curve_split"] = None
    if conf["encoder"] not in ENCODERS:
        raise ValueError(f"mtl.encoder: unknown {conf['encoder']!r}; known: {list(ENCODERS)}")
    if conf["sharing"] not in SHARING:
        raise ValueError(f"mtl.sharing: unknown {conf['sharing']!r}; known: {list(SHARING)}")
    if conf["weights"] is not None and (conf["encoder"] == "mlp" or not isinstance(conf["weights"], str)):
        raise ValueError(f"mtl.weights: a file of ImageNet weights for a ResNet encoder, or null; got "
                         f"{conf['weights']!r} with encoder {conf['encoder']!r}")
    if conf["lower_batches"] not in LOWER_BATCHES:
        raise ValueError(f"mtl.lower_batches: unknown {conf['lower_batches']!r}; known: {list(LOWER_BATCHES)}")
    return conf


def method_and_options(experiment: dict) -> tuple[str, dict]:
    options = dict(experiment["weighting"])
    name = options.pop("name")
    if name not in BILEVEL and name != "normal" and name not in WEIGHTINGS:
        raise ValueError(f"weighting.name: the mtl runner runs a registered weighting {sorted(WEIGHTINGS)}, "
                         f"'normal', or a bi-level method {sorted(BILEVEL)}; got {name!r}")
    return name, options


def check_experiment(experiment: dict) -> None:
    """Names and options, before anything runs (data splits are checked when they are read)."""
    from ..options import check_options

    family_module(experiment["data"]["family"])
    settings(experiment)
    name, options = method_and_options(experiment)
    if name in BILEVEL:
        check_options("weighting", BILEVEL[name], options, skip=4)
        if name == "moml":
            check_combiner(options.get("combiner", "mgda"), options.get("combiner_options"))
    elif name == "normal":
        known = {*NORMAL_OPTIONS, *NECK_OPTIONS}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"weighting.{unknown[0]}: unknown option of weighting 'normal'; known: {sorted(known)}")
        combiner = options.get("combiner", "mean")
        if combiner not in WEIGHTINGS:
            raise ValueError(f"weighting.combiner: unknown {combiner!r}; known: {sorted(WEIGHTINGS)}")
        check_options("weighting.combiner_options", WEIGHTINGS[combiner], dict(options.get("combiner_options") or {}),
                      skip=3)
    else:
        check_options("weighting", WEIGHTINGS[name], options, skip=3)


def build_model(conf: dict, data: MultiTaskData, name: str, options: dict) -> MultiTaskNet:
    """The network, initialised from the global torch seed (set by the caller)."""
    neck = None
    if name == "normal":
        neck_options, _ = split_options(options)
        width = encoder_width(conf["encoder"], data.input_dim, list(conf["hidden"]))
        neck = NormalNeck(width, data.num_tasks, **neck_options)
    return MultiTaskNet(data.input_dim, list(conf["hidden"]), data.num_classes, neck, encoder=conf["encoder"],
                        sharing=conf["sharing"], weights=conf["weights"], head_hidden=conf["head_hidden"],
                        input_norm=conf["input_norm"])


# --------------------------------------------------------------------------- metrics
def outputs_in_chunks(model: MultiTaskNet, data: MultiTaskData, split: str, chunk: int):
    """Per chunk of ``split``: every task's (outputs, targets); tasks that share their inputs (and the
    encoder) take one encoder pass per chunk."""
    one_pass = data.shared_inputs and model.sharing == "hard"
    size = data.size(split, 0)
    if not one_pass:
        for task in range(data.num_tasks):
            x, y = data.tensors[split][task]
            for i in range(0, data.size(split, task), chunk):
                yield [(task, model(x[i:i + chunk], task), y[i:i + chunk])]
        return
    x = data.tensors[split][0][0]
    for i in range(0, size, chunk):
        features = model.encode(x[i:i + chunk], 0)
        yield [(task, model.from_features(features, task, size=x.shape[-2:]), data.tensors[split][task][1][i:i + chunk])
               for task in range(data.num_tasks)]


@torch.no_grad()
def task_metrics(model: MultiTaskNet, data: MultiTaskData, split: str, chunk: int = 256) -> list[dict]:
    """Per task its objective's metrics over the whole split (classification: accuracy and macro-F1 in
    percent, as the thesis reports them; every task: its mean loss), with the model in evaluation mode
    (BatchNorm's running statistics, no dropout) and put back as it was."""
    training = model.training
    model.eval()
    states = [objective.start() for objective in data.objectives]
    for outputs in outputs_in_chunks(model, data, split, chunk):
        for task, output, target in outputs:
            data.objectives[task].accumulate(states[task], output, target)
    model.train(training)
    return [{"task": name, **objective.result(state)}
            for name, objective, state in zip(data.names, data.objectives, states)]


# --------------------------------------------------------------------------- bi-level adapter
class BilevelStep:
    """MOML / FORUM on a network problem; keeps the network's parameters equal to the method's ω."""

    def __init__(self, method, problem, model: MultiTaskNet, data: MultiTaskData):
        self.method, self.problem, self.model, self.data = method, problem, model, data
        self.corrupted = None
        if isinstance(problem, HyperCleaning) and hasattr(data.source, "corrupted"):
            self.corrupted = [torch.as_tensor(np.asarray(data.source.corrupted(name)), device=data.device).bool()
                              for name in data.names]
        self.sync()

    def sync(self) -> None:
        torch.nn.utils.vector_to_parameters(self.method.model_parameters(), self.model.parameters())

    def diagnostics(self) -> dict[str, float]:
        """Hyper-cleaning: mean σ(α) on clean and on corrupted training samples (never used to train)."""
        if self.corrupted is None:
            return {}
        stats = {}
        for task, (name, mask) in enumerate(zip(self.data.names, self.corrupted)):
            weights = self.problem.sample_weights(self.method.alpha.detach(), task)
            if mask.any():
                stats[f"sample_weight_corrupted_{name}"] = float(weights[mask].mean())
            if (~mask).any():
                stats[f"sample_weight_clean_{name}"] = float(weights[~mask].mean())
        return stats

    def step(self, iteration: int) -> dict[str, float]:
        stats = self.method.step(iteration)
        self.sync()
        stats.update(self.diagnostics())
        return stats

    def state_dict(self) -> dict:
        return self.method.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.method.load_state_dict(state)
        self.sync()


def build_step(experiment: dict, conf: dict, model: MultiTaskNet, data: MultiTaskData, seed: int):
    name, options = method_and_options(experiment)
    loop_options = {key: conf[key] for key in ("batch_size", "optimizer", "lr", "weight_decay", "scale", "heads")}
    if name in BILEVEL:
        steps = options.get("lower_steps", inspect.signature(BILEVEL[name]).parameters["lower_steps"].default)
        problem_options = {"batch_size": conf["batch_size"], "upper_batch_size": conf["upper_batch_size"],
                           "upper_split": conf["upper_split"], "lower_batches": conf["lower_batches"],
                           "steps_per_iteration": steps}
        if conf["bilevel"] == "hyper_cleaning":
            problem_options["alpha_init"] = conf["alpha_init"]
        problem = PROBLEMS[conf["bilevel"]](model, data, seed, **problem_options)
        method = BILEVEL[name](problem, problem.initial_alpha(), problem.initial_omega(), seed, **options)
        return BilevelStep(method, problem, model, data)
    if name == "normal":
        _, training = split_options(options)
        return NORMAL(model, data, seed, **training, **loop_options)
    return WeightedMTL(model, data, seed, name, options, **loop_options)


# --------------------------------------------------------------------------- learning-rate schedules
def network_optimizers(step_object) -> list[torch.optim.Optimizer]:
    """The optimisers of the network's parameters: a single-level step's, FORUM's ω optimiser (MOML's ω moves
    only through its lower-level steps: it has none)."""
    if isinstance(step_object, BilevelStep):
        optimizer = getattr(step_object.method, "omega_optimizer", None)
        return [optimizer] if optimizer is not None else []
    return [step_object.optimizer]


class LearningRates:
    """``mtl.lr_decay_every`` (StepLR by iterations, a function of the iteration, so a resumed run continues
    it) or ``mtl.lr_plateau`` (ReduceLROnPlateau on the selection score, checked at every curve point; its
    state is part of the run's state) on the network's optimisers."""

    def __init__(self, optimizers: list, conf: dict):
        self.optimizers = optimizers
        self.base = [[group["lr"] for group in optimizer.param_groups] for optimizer in optimizers]
        self.every, self.decay = conf["lr_decay_every"], conf["lr_decay"]
        plateau = conf["lr_plateau"]
        self.plateaus = [torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=plateau["factor"], patience=plateau["patience"], min_lr=plateau["min_lr"])
            for optimizer in optimizers] if plateau else []

    def before_step(self, iteration: int) -> None:
        if not self.every:
            return
        for optimizer, base in zip(self.optimizers, self.base):
            for group, lr in zip(optimizer.param_groups, base):
                group["lr"] = lr * self.decay ** (iteration // self.every)

    def after_curve_point(self, loss: float) -> None:
        for plateau in self.plateaus:
            plateau.step(loss)

    def state_dict(self) -> dict:
        return {"plateaus": [plateau.state_dict() for plateau in self.plateaus]}

    def load_state_dict(self, state: dict) -> None:
        for plateau, saved in zip(self.plateaus, state["plateaus"]):
            plateau.load_state_dict(saved)


# --------------------------------------------------------------------------- the trainable
class Trainer:
    """One multi-task run, a trainable of taskbal.loop (built after the loop has seeded torch)."""

    def __init__(self, experiment: dict, seed: int, split_path: Path, device: torch.device):
        self.experiment, self.seed, self.device = experiment, seed, device
        self.conf = settings(experiment)
        self.iterations, self.curve_every = self.conf["iterations"], self.conf["curve_every"]
        tasks = family_module(experiment["data"]["family"]).Tasks(split_path)
        self.data = MultiTaskData(tasks, device)
        kinds = {o.kind for o in self.data.objectives}
        if self.conf["select_on"] is not None and kinds not in ({"classification"}, {"regression"}):
            raise ValueError("mtl.select_on: the model is selected by the mean accuracy of classification tasks or "
                             "the mean normalised MAE of regression tasks; this family's tasks are "
                             f"{[o.kind for o in self.data.objectives]} (select_on: null)")
        for key in ("curve_split", "select_on", "eval_split"):
            split = self.conf[key]
            if split is not None and not self.data.has_split(split):
                raise ValueError(f"mtl.{key}: the family has no split {split!r} (it has {list(self.data.tensors)})")
        name, options = method_and_options(experiment)
        self.model = build_model(self.conf, self.data, name, options).to(device)
        self.step_object = build_step(experiment, self.conf, self.model, self.data, seed)
        self.rates = LearningRates(network_optimizers(self.step_object), self.conf)
        self.best: dict | None = None  # {"iteration", "score", "model"}

    def step(self, iteration: int) -> dict:
        self.rates.before_step(iteration)
        return self.step_object.step(iteration)

    # -- curve and selection ----------------------------------------------------------------------
    def evaluations(self) -> dict[str, float]:
        values = {}
        for split in dict.fromkeys(s for s in (self.conf["curve_split"], self.conf["select_on"]) if s):
            rows = task_metrics(self.model, self.data, split)
            for row in rows:
                values.update({f"{split}_{key}_{row['task']}": value for key, value in row.items()
                               if key not in ("task", "f1")})
            if all("accuracy" in row for row in rows):
                values[f"{split}_mean_accuracy"] = float(np.mean([row["accuracy"] for row in rows]))
            if all("normalised_mae" in row for row in rows):
                values[f"{split}_mean_normalised_mae"] = float(np.mean([row["normalised_mae"] for row in rows]))
        return values

    def curve_row(self, iteration: int, window: list[dict]) -> dict:
        row = {"iteration": iteration}
        keys = list(dict.fromkeys(key for step in window for key in step))
        row.update({key: float(np.nanmean([step.get(key, np.nan) for step in window])) for key in keys})
        row.update(self.evaluations())
        select_on = self.conf["select_on"]
        if select_on is not None:
            score = row[f"{select_on}_mean_accuracy"] if f"{select_on}_mean_accuracy" in row \
                else -row[f"{select_on}_mean_normalised_mae"]  # higher is better
            self.rates.after_curve_point(-score)
            if self.best is None or score > self.best["score"]:
                self.best = {"iteration": iteration, "score": score, "model": copy.deepcopy(self.model.state_dict())}
        return row

    def progress_line(self, row: dict) -> str:
        return " ".join(f"{k}={v:.4g}" for k, v in row.items() if k.endswith(("mean_accuracy", "mean_normalised_mae")))

    # -- resume state and outputs -----------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "step": self.step_object.state_dict(), "best": self.best,
                "rates": self.rates.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.step_object.load_state_dict(state["step"])
        self.rates.load_state_dict(state["rates"])
        self.best = state["best"]

    def selected(self) -> tuple[dict, int]:
        """The reported model: the best on ``select_on``, else the last one."""
        if self.best is not None:
            return self.best["model"], self.best["iteration"]
        return self.model.state_dict(), self.iterations

    def final_state(self) -> dict:
        model_state, selected = self.selected()
        extra = {}
        if isinstance(self.step_object, BilevelStep):
            extra["alpha"] = self.step_object.method.alpha.detach().cpu().clone()
        return {"model": model_state, "selected_iteration": selected, **extra}

    def summary(self, rows: list[dict]) -> dict:
        weights = self.conf["weights"]
        pretrained = {} if self.conf["encoder"] == "mlp" else {
            "pretrained_weights": weights or "none: random initialisation, not the pretrained ImageNet weights"}
        return {"selected_iteration": self.selected()[1], "num_params": sum(p.numel() for p in self.model.parameters()),
                **pretrained,
                **{f"final_{k}": v for k, v in rows[-1].items()
                   if k != "iteration" and isinstance(v, float) and math.isfinite(v)}}


def train(experiment: dict, seed: int, split_path: Path, out_dir: Path, *, device: torch.device,
          checkpoint_every: int = 500, stop_after: int | None = None, progress: bool = True) -> dict:
    return fit(lambda: Trainer(experiment, seed, Path(split_path), device), experiment, seed, out_dir,
               checkpoint_every=checkpoint_every, stop_after=stop_after, progress=progress, map_location=device)


def load_trained_model(final_path: Path, split_path: Path, device: torch.device):
    """(model with the selected parameters, data, final.pt contents)."""
    final = torch.load(final_path, map_location=device, weights_only=False)
    experiment = final["experiment"]
    conf = settings(experiment)
    data = MultiTaskData(family_module(experiment["data"]["family"]).Tasks(split_path), device)
    name, options = method_and_options(experiment)
    model = build_model(conf, data, name, options).to(device)
    model.load_state_dict(final["model"])
    model.eval()
    return model, data, final
