"""A ``tune`` search space: a YAML file mapping ``fit`` options to the ranges Optuna samples them from, plus the
pruner and the sampler; checked against the recipe before anything is written (``fit --print_config`` tells which
options exist and which values they take). docs/tuning.md describes the format."""

from __future__ import annotations

import contextlib
import difflib
import inspect
import io
import json
import math
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.exceptions import ExperimentalWarning

from mnist_lit.common.errors import UserError, one_line
from mnist_lit.training import cli as fit_cli

SPACES = fit_cli.CONFIGS / "tune"  # configs/tune/NAME.yaml: the search space of recipe NAME
# options tune sets for every trial (a tune command may not give them) and those a space file may not search
TUNE_SETS = ("trainer.logger", "ckpt_path", "select_on", "print_config")
NOT_SEARCHED = (*TUNE_SETS, "trainer.callbacks", "config", "seed_everything")

PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "none": optuna.pruners.NopPruner,
}
# (Grid and brute-force samplers stop the study themselves when they run out of points, which Optuna allows only
# inside Study.optimize; tune stops at N trials.)
SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
KINDS = {"float": ("low", "high", "log", "step"), "int": ("low", "high", "log", "step"), "categorical": ("choices",)}


@dataclass
class Space:
    """A space file: each key a fit option (``model.lr``) and how to sample it; ``pruner`` and ``sampler`` apart."""

    path: str
    params: dict[str, BaseDistribution]
    pruner: dict[str, Any] = field(default_factory=lambda: {"type": "median"})
    sampler: dict[str, Any] = field(default_factory=lambda: {"type": "tpe"})

    def make_pruner(self) -> optuna.pruners.BasePruner:
        return _build(PRUNERS, self.pruner, f"{self.path}: pruner")

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        return _build(SAMPLERS, self.sampler, f"{self.path}: sampler")

    def identity(self) -> dict[str, Any]:
        """What a study remembers of its space, to refuse a different one later (JSON)."""
        return {"params": {k: json.loads(distribution_to_json(d)) for k, d in sorted(self.params.items())},
                "pruner": self.pruner, "sampler": self.sampler}


def _build(classes: dict[str, type], spec: dict[str, Any], where: str) -> Any:
    kind = spec.get("type")
    if kind not in classes:
        raise UserError(f"{where}: type {kind!r} is none of {', '.join(classes)}")
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    accepted = inspect.signature(classes[kind]).parameters
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise UserError(f"{where}: {kind} has no option {unknown[0]!r}; it takes {', '.join(accepted)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return classes[kind](**kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"{where}: {one_line(err)}") from None


def read_space(path: str | Path) -> Space:
    """The space file at ``path``; a ``UserError`` naming the file and the entry for anything wrong in it."""
    where = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise UserError(f"cannot read the space file {where}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{where} is not YAML: {one_line(err)}") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"{where}: a space file maps fit options to ranges, e.g. "
                        "model.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}")
    data = dict(data)
    pruner, sampler = data.pop("pruner", "median"), data.pop("sampler", "tpe")
    space = Space(where, {}, _spec(pruner, f"{where}: pruner"), _spec(sampler, f"{where}: sampler"))
    for name, entry in data.items():
        space.params[str(name)] = _distribution(str(name), entry, where)
    if not space.params:
        raise UserError(f"{where}: no option to search")
    space.make_pruner(), space.make_sampler()  # their options are checked now, before anything is written
    return space


def _spec(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {"type": "none"}
    if isinstance(value, str):
        return {"type": value}
    if isinstance(value, dict) and "type" in value:
        return dict(value)
    raise UserError(f"{where}: give a type, e.g. {{type: median, n_warmup_steps: 1}}")


def _number(value: Any, integer: bool, where: str) -> int | float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            raise UserError(f"{where}: {value!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where}: {value!r} is not a number")
    if integer:
        if value != int(value):
            raise UserError(f"{where}: {value!r} is not a whole number")
        return int(value)
    return float(value)


def _distribution(name: str, entry: Any, path: str) -> BaseDistribution:
    where = f"{path}: {name}"
    if not isinstance(entry, dict) or entry.get("type") not in KINDS:
        raise UserError(f"{where}: give {{type: float|int|categorical, ...}}, e.g. "
                        "{type: float, low: 1.0e-4, high: 1.0e-2, log: true}")
    kind = entry["type"]
    unknown = [k for k in entry if k not in ("type", *KINDS[kind])]
    if unknown:
        raise UserError(f"{where}: {kind} takes {', '.join(KINDS[kind])}, not {unknown[0]!r}")
    if kind == "categorical":
        choices = entry.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: empty range: choices must be a list of one or more values")
        if not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            raise UserError(f"{where}: choices must be numbers, strings, true/false or null")
        if len(set(map(repr, choices))) < len(choices):
            raise UserError(f"{where}: a choice is listed twice")
        return CategoricalDistribution(choices)
    if "low" not in entry or "high" not in entry:
        raise UserError(f"{where}: give both low and high")
    integer = kind == "int"
    low, high = _number(entry["low"], integer, f"{where}.low"), _number(entry["high"], integer, f"{where}.high")
    log, step = entry.get("log", False), entry.get("step")
    if not isinstance(log, bool):
        raise UserError(f"{where}: log is true or false")
    if low > high:
        raise UserError(f"{where}: empty range: low {low:g} is above high {high:g}")
    if log and low <= 0:
        raise UserError(f"{where}: a log range must start above 0, not at {low:g}")
    if step is not None:
        step = _number(step, integer, f"{where}.step")
        if step <= 0:
            raise UserError(f"{where}: step must be above 0")
        if log:
            raise UserError(f"{where}: give step or log, not both")
    try:
        if integer:
            return IntDistribution(low, high, log=log, step=1 if step is None else step)
        return FloatDistribution(low, high, log=log, step=step)
    except ValueError as err:
        raise UserError(f"{where}: {one_line(err)}") from None


def option_name(arg: str) -> str | None:
    """``model.lr`` for ``--model.lr`` or ``--model.lr=0.1``; None for a value."""
    if not arg.startswith("--"):
        return None
    return arg[2:].split("=", 1)[0].removesuffix("+")


def as_options(params: dict[str, Any]) -> list[str]:
    """``{"model.lr": 0.001}`` → ``["--model.lr=0.001"]``; values in JSON, which LightningCLI reads back exactly."""
    return [f"--{name}={value if isinstance(value, str) else json.dumps(value)}" for name, value in params.items()]


# --- the fit a trial runs ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_call() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """Run the fit entry point for its parser alone: its output is caught, ``sys.argv`` (which it sets) restored."""
    argv, out, err = list(sys.argv), io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield out, err
    finally:
        sys.argv[:] = argv


def fit_config(args: list[str]) -> dict[str, Any]:
    """The whole configuration ``fit ARGS`` would run, as ``fit ARGS --print_config`` prints it (nothing runs, nothing
    is written); a ``UserError`` with fit's own one-line error for an option fit refuses."""
    with _quiet_call() as (out, err):
        try:
            status = fit_cli.main(["fit", *args, "--print_config"])
        except SystemExit as stop:  # --print_config's normal way out
            status = stop.code or 0
    if status != 0:
        message = next((line for line in err.getvalue().splitlines() if line.startswith("error: ")), "error: ?")
        raise UserError(message.removeprefix("error: "))
    return {"text": out.getvalue(), **yaml.safe_load(out.getvalue())}


def _keys(config: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(config, dict):
        for key, value in config.items():
            yield from _keys(value, f"{prefix}{key}.")
    if prefix:
        yield prefix[:-1]


def check_space(space: Space, args: list[str], config: dict[str, Any]) -> None:
    """Every option the space searches is one that ``fit`` with these ``args`` has, is not also fixed on the command
    line, and takes the ends of its range (and each of its choices)."""
    known = set(_keys({k: v for k, v in config.items() if k != "text"}))
    fixed = {option_name(arg) for arg in args} - {None}
    for name in space.params:
        if name not in known or name.startswith(NOT_SEARCHED):
            close = difflib.get_close_matches(name, sorted(k for k in known if not k.startswith(NOT_SEARCHED)), 3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise UserError(f"{space.path}: {name} is not an option tune can search for this recipe{hint}")
        if name in fixed:
            raise UserError(f"--{name} is given on the command line and searched by {space.path}: drop one")
    for variant in _ends(space):
        try:
            fit_config([*args, *as_options(variant)])
        except UserError:
            for name, value in variant.items():  # which one
                try:
                    fit_config([*args, *as_options({name: value})])
                except UserError as err:
                    raise UserError(f"{space.path}: {name} = {value!r}: {err}") from None
            raise


def _ends(space: Space) -> list[dict[str, Any]]:
    """Sample points that between them take every range's two ends and every choice."""
    count = max([2, *(len(d.choices) for d in space.params.values() if isinstance(d, CategoricalDistribution))])
    points = []
    for i in range(count):
        point = {}
        for name, d in space.params.items():
            if isinstance(d, CategoricalDistribution):
                point[name] = d.choices[i % len(d.choices)]
            else:
                high = d.low + ((d.high - d.low) // d.step) * d.step if d.step else d.high
                point[name] = d.low if i % 2 == 0 else high
        points.append(point)
    return points


def check_fit_args(args: list[str]) -> None:
    for arg in args:
        name = option_name(arg)
        if name is not None and name.startswith(TUNE_SETS):
            raise UserError(f"--{name}: tune sets it for every trial (each its own run under lightning_logs/tune, "
                            f"checkpoint picked on val/acc); leave it out")
        if arg in ("-h", "--help"):
            raise UserError("--help: see `tune --help`; `fit --help` lists the options tune passes to fit")


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """The trial's options (those of a trial retried are the ones it had)."""
    return {name: _suggest(trial, name, distribution) for name, distribution in space.params.items()}


def _suggest(trial: optuna.Trial, name: str, d: BaseDistribution) -> Any:
    if isinstance(d, CategoricalDistribution):
        return trial.suggest_categorical(name, list(d.choices))
    if isinstance(d, IntDistribution):
        return trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
    return trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
