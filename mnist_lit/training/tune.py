"""``tune``: an Optuna study whose trials are ordinary ``fit`` runs of a recipe, with options sampled from a space.

    python -m mnist_lit.cli tune --model NAME --trials N [--space FILE] [--storage URL] [--study NAME] [fit options]

Each trial is ``fit --model NAME [fit options] --select_on val`` plus its sampled options, run in this process through
the same entry point as the ``fit`` command (:func:`mnist_lit.training.cli.main`), logging into its own TensorBoard
run ``lightning_logs/tune/STUDY/NET/trial_K``. Its objective is its best validation accuracy (``val/acc``, the
checkpoint ``--select_on val`` keeps); ``optuna-integration``'s ``PyTorchLightningPruningCallback`` reports
``val/acc`` after every epoch and stops the trial when the space file's pruner says so. The study lives in a SQLite
file beside the runs (``lightning_logs/tune/STUDY/study.db``) or in the database ``--storage`` names (PostgreSQL for
several machines): the same command, run again or run in several processes at once, runs the trials the study
still lacks, up to N in all. docs/tuning.md has the why of each choice.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import torch
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState
from optuna_integration.pytorch_lightning import PyTorchLightningPruningCallback

from mnist_lit.common.atomic_files import replaced_on_success
from mnist_lit.common.errors import UserError, one_line
from mnist_lit.training import cli as fit_cli
from mnist_lit.training.run_folders import first_process, launcher_store
from mnist_lit.training.tune_space import (
    SPACES,
    as_options,
    check_fit_args,
    check_space,
    fit_config,
    read_space,
    suggest,
)
from mnist_lit.training.tune_storage import (
    AskLock,
    Heartbeat,
    alive,
    check_storage,
    hide_password,
    process_id,
    storage_kwargs,
    with_driver,
)

TUNE_DIR = Path("lightning_logs") / "tune"  # every study's folder: its runs, best.yaml and (embedded) its database
MONITOR = "val/acc"
HEARTBEAT = 60  # seconds; a trial that stops beating for twice as long is failed (and retried) by the others
RETRIES = 2  # times a trial cut off is run again with the same options
POLL = 2.0  # seconds between looks at the study while waiting for trials of other processes
RANKS_EXIT = 60  # seconds the other ranks of a trial's DDP fit get to exit after rank 0's fit returned
FOLLOW_WAIT = datetime.timedelta(days=7)  # how long torchrun's other ranks wait for rank 0's next trial


# --- the callback in the trial's fit -----------------------------------------------------------------------------


@dataclass
class Running:
    """The trial this process runs, for the ``TrialReport`` its fit builds from the command line, and what that
    callback saw of the fit."""

    trial: optuna.Trial | None = None
    callback: TrialReport | None = None
    ranks: list[subprocess.Popen] | None = None  # the fit's other ranks, when Lightning's DDP launcher started them
    epochs: int = 0
    best: float | None = None
    diverged: bool = False

    def start(self, trial: optuna.Trial) -> None:
        self.trial, self.callback, self.ranks, self.epochs, self.best, self.diverged = trial, None, None, 0, None, False


RUNNING = Running()


class TrialReport(PyTorchLightningPruningCallback):
    """optuna-integration's pruning callback, on the trial ``tune`` runs in this process: it reports ``val/acc`` after
    every epoch and stops the fit when the study's pruner says so. Under DDP it is on every rank and only rank 0 (the
    ``tune`` process, which holds the trial) talks to the study; the other ranks have no trial and take rank 0's
    decision to stop."""

    def __init__(self, monitor: str = MONITOR) -> None:
        """
        Args:
            monitor: the metric reported to the study after every epoch.
        """
        super().__init__(RUNNING.trial, monitor)  # type: ignore[arg-type]
        if RUNNING.trial is not None:
            RUNNING.callback = self

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._trial is not None:
            RUNNING.ranks = getattr(trainer.strategy.launcher, "procs", None)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._trial is not None:
            super().on_fit_start(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.callback_metrics.get(self.monitor) is None:
            return super().on_validation_end(trainer, pl_module) if self._trial is not None else None
        if pl_module.current_epoch + 1 == trainer.max_epochs:
            # The trial has trained its whole budget: pruning it now would save nothing and drop its result. Its last
            # epoch is still reported, for the pruner's medians; every rank returns here, so none awaits a broadcast.
            if self._trial is not None:
                RUNNING.epochs = trainer.max_epochs
                self._trial.report(float(trainer.callback_metrics[self.monitor]), step=pl_module.current_epoch)
            return None
        if self._trial is not None:
            RUNNING.epochs = pl_module.current_epoch + 1
            return super().on_validation_end(trainer, pl_module)
        if trainer.world_size > 1:  # the broadcast rank 0's callback makes after it asked the pruner
            trainer.should_stop = trainer.should_stop or trainer.strategy.broadcast(False)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._trial is None:
            return
        checkpoint = trainer.checkpoint_callback
        score = getattr(checkpoint, "best_model_score", None)
        RUNNING.best = None if score is None else float(score)
        RUNNING.diverged = any(getattr(c, "diverged", False) for c in trainer.callbacks)


# --- the study -----------------------------------------------------------------------------------------------------


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial counts toward the N trials: finished (complete, pruned, or failed by itself: a diverged run),
    or running. Trials cut off (Ctrl+C, SIGTERM, a dead process) do not: they are run again."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get("error") is not None


class Interrupted(BaseException):
    """SIGTERM while no fit was running to stop after its step."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Signals:
    """SIGTERM and SIGINT (Ctrl+C) while the study runs. During a fit, Lightning's own SIGTERM handler (which calls
    this one too) stops the fit after its step, and Ctrl+C reaches the fit as KeyboardInterrupt; otherwise SIGTERM
    raises ``Interrupted`` at once. Either way the trial is marked failed, queued to run again, and tune exits with
    128 + the signal's number."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.received = signum
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:  # not inside Lightning's handler: stop now
            raise Interrupted(signum)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.received = signum
        raise KeyboardInterrupt

    def rearm(self) -> None:
        """After a fit: Lightning ignores SIGINT once it has handled a Ctrl+C."""
        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


@dataclass
class Outcome:
    state: TrialState
    value: float | None = None
    error: str | None = None  # failed by itself: counts toward N
    cut_off: str | None = None  # stopped from outside: run again
    stop: int | None = None  # tune's exit status, if tune stops after this trial


class Tune:
    def __init__(self, args: argparse.Namespace, fit_args: list[str]) -> None:
        self.args, self.fit_args = args, fit_args
        self.model = args.model
        if self.model not in fit_cli.NETS and not Path(self.model).is_file():
            raise UserError(f"unknown model {self.model!r}; valid names: {', '.join(fit_cli.NETS)}")
        space_path = args.space
        if space_path is None:
            if self.model not in fit_cli.NETS:
                raise UserError(f"--model {self.model} is a file: give its search space with --space FILE")
            space_path = str(SPACES / f"{self.model}.yaml")
        self.space = read_space(space_path)
        self.study_name = args.study or (self.model if self.model in fit_cli.NETS else Path(self.model).stem)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.study_name):
            raise UserError(f"--study {self.study_name!r}: use letters, digits, '_', '.' and '-' (it names a folder)")
        self.folder = TUNE_DIR / self.study_name
        check_fit_args(fit_args)
        self.base = ["--model", self.model, *fit_args, "--select_on", "val"]
        config = fit_config(self.base)
        check_space(self.space, self.base, config)
        self.net = config["model"]["net"]
        self.url = with_driver(args.storage or f"sqlite:///{(self.folder / 'study.db').absolute()}")
        self.shown = hide_password(args.storage or self.url)  # as given, without its password
        if args.storage is not None:
            check_storage(self.url, args.storage)
        self.signals: Signals | None = None
        self.store = launcher_store(FOLLOW_WAIT)  # under torchrun: the other ranks follow (``follow``)
        self.published = 0

    # -- the loop --

    def run(self) -> int:
        """Runs trials until the study has N; returns tune's exit status."""
        self.signals = Signals()
        try:
            return self._run()
        except Interrupted as stop:
            print(f"tune: stopped by {stop}", file=sys.stderr)
            return 128 + stop.signum
        except KeyboardInterrupt:
            print("tune: stopped by Ctrl+C", file=sys.stderr)
            return 128 + signal.SIGINT
        except Exception as err:
            from sqlalchemy.exc import SQLAlchemyError

            if not isinstance(err, SQLAlchemyError) or os.environ.get("MNIST_LIT_DEBUG"):
                raise
            reason = next((line.strip() for line in str(getattr(err, "orig", None) or err).splitlines()
                           if line.strip()), type(err).__name__)
            print(f"error: the study's database ({self.shown}) failed: {reason}. Its trials are safe: run the same "
                  f"command again when it is back", file=sys.stderr)
            return 1
        finally:
            self.publish(None)
            self.signals.restore()

    def _run(self) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lock = AskLock(self.url, self.study_name)
        with self.lock.held():  # processes started together would race to create the database's tables
            try:
                self.storage = RDBStorage(self.url, engine_kwargs=storage_kwargs(self.url),
                                          heartbeat_interval=self.args.heartbeat, grace_period=2 * self.args.heartbeat,
                                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(RETRIES))
            except RuntimeError as err:  # a database of another Optuna version
                raise UserError(f"--storage {self.shown}: {one_line(err)}") from None
            self.study = optuna.create_study(storage=self.storage, study_name=self.study_name, direction="maximize",
                                             sampler=self.space.make_sampler(), pruner=self.space.make_pruner(),
                                             load_if_exists=True)
            self._same_study()
        waiting = False
        while True:
            trial, trials = self._claim()
            if trial is None:
                running = [t.number for t in trials if t.state == TrialState.RUNNING]
                if not running:
                    break
                if not waiting:
                    print(f"tune: {self.args.trials} trials started; waiting for trial(s) {running} of other "
                          f"processes to end", file=sys.stderr)
                    waiting = True
                time.sleep(POLL)
                continue
            waiting = False
            outcome = self._trial(trial)
            if outcome.stop is not None:
                return outcome.stop
        return self.report()

    def _same_study(self) -> None:
        """The study remembers the model and space it was started with; another is refused (N trials of one search)."""
        if self.study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise UserError(f"study {self.study_name} in {self.shown} minimizes its objective; tune "
                            f"maximizes {MONITOR}: start a new study with --study NAME")
        mine = {"model": self.model, "space": self.space.identity()}
        attrs = self.study.user_attrs
        if "mnist_lit" not in attrs:
            self.study.set_user_attr("mnist_lit", mine)
            self.study.set_user_attr("fit_args", self.fit_args)
            return
        if attrs["mnist_lit"] != mine:
            was = attrs["mnist_lit"]
            what = "model" if was.get("model") != self.model else "search space"
            raise UserError(f"study {self.study_name} in {self.shown} was started with another {what} "
                            f"({was.get('model')}, {', '.join(was.get('space', {}).get('params', {}))}); run it with "
                            f"the same, or start a new study with --study NAME")
        if attrs.get("fit_args") != self.fit_args:
            print(f"tune: note: study {self.study_name} was started with the fit options {attrs.get('fit_args')}; "
                  f"this process trains with {self.fit_args}", file=sys.stderr)

    def _claim(self) -> tuple[optuna.Trial | None, list[FrozenTrial]]:
        """The next trial this process runs (a queued retry first), or None when N trials are finished or running."""
        with self.lock.held():
            fail_stale_trials(self.study)  # those of processes gone quiet for 2 heartbeats (other machines)
            self._fail_dead()  # those of processes of this machine that are gone, at once
            trials = self.study.get_trials(deepcopy=False)
            if sum(map(counts, trials)) >= self.args.trials:
                return None, trials
            trial = self.study.ask()
            for key in ("error", "cut_off", "epochs"):
                if key in trial.user_attrs:  # copied from the trial this one retries
                    trial.set_user_attr(key, None)
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("process", process_id())
            self.heartbeat = Heartbeat(self.storage, self._trial_id(trial.number), self.args.heartbeat)
            return trial, trials

    def _trial_id(self, number: int) -> int:
        """The storage's id of this study's trial ``number`` (Optuna's public storage API; Trial keeps it private)."""
        study_id = self.storage.get_study_id_from_name(self.study_name)
        return self.storage.get_trial_id_from_study_id_trial_number(study_id, number)

    def _fail_dead(self) -> None:
        host = socket.gethostname()
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            process = trial.user_attrs.get("process")
            if trial.user_attrs.get("host") != host or process is None or alive(process):
                continue
            trial_id = self._trial_id(trial.number)
            try:
                self.storage.set_trial_user_attr(trial_id, "cut_off", "its process died")
                self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            print(f"tune: trial {trial.number} was cut off (its process died); it runs again", file=sys.stderr)
            RetryHeartbeatStaleTrialCallback(RETRIES)(self.study, self._frozen(trial.number))

    def _frozen(self, number: int) -> FrozenTrial:
        return next(t for t in self.study.get_trials(deepcopy=True) if t.number == number)

    # -- one trial --

    def _trial(self, trial: optuna.Trial) -> Outcome:
        try:
            outcome = self._fit(trial)
        except BaseException as err:  # interrupted between the fit and the study's record of it
            outcome = Outcome(TrialState.FAIL, cut_off=str(err) if isinstance(err, Interrupted) else type(err).__name__)
            self._finish(trial, outcome)
            raise
        self._finish(trial, outcome)
        if outcome.stop is None and self.signals.received is not None:  # SIGTERM in the fit's last moments
            outcome.stop = 128 + self.signals.received
        return outcome

    def _finish(self, trial: optuna.Trial, outcome: Outcome) -> None:
        self.heartbeat.stop()
        for key in ("error", "cut_off"):
            if getattr(outcome, key) is not None:
                trial.set_user_attr(key, getattr(outcome, key))
        trial.set_user_attr("epochs", RUNNING.epochs)
        if outcome.state == TrialState.COMPLETE:
            self.study.tell(trial, outcome.value)
        else:
            self.study.tell(trial, state=outcome.state)
        if outcome.cut_off is not None:
            print(f"tune: trial {trial.number} was cut off ({outcome.cut_off}) and is marked failed; the same command "
                  f"runs it again", file=sys.stderr)
            RetryHeartbeatStaleTrialCallback(RETRIES)(self.study, self._frozen(trial.number))
        elif outcome.error is not None:
            print(f"tune: trial {trial.number} failed: {outcome.error}", file=sys.stderr)
        elif outcome.state == TrialState.PRUNED:
            print(f"tune: trial {trial.number} pruned after epoch {RUNNING.epochs}", file=sys.stderr)
        else:
            print(f"tune: trial {trial.number}: {MONITOR} {outcome.value:.4f}", file=sys.stderr)

    def _fit(self, trial: optuna.Trial) -> Outcome:
        params = suggest(trial, self.space)
        run = self.folder / self.net / f"trial_{trial.number}"
        trial.set_user_attr("run", str(run))
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        print(f"tune: trial {trial.number}: {shown} → {run}", file=sys.stderr)
        argv = ["fit", *self.base, *as_options(params),
                f"--trainer.logger.init_args.save_dir={self.folder}",
                f"--trainer.logger.init_args.version={run.name}",
                "--trainer.callbacks+=mnist_lit.training.tune.TrialReport"]
        self.publish(argv)
        RUNNING.start(trial)
        environ, sys_argv = dict(os.environ), list(sys.argv)
        try:
            status = fit_cli.main(argv)
            if status == 0 and RUNNING.callback is not None:
                with warnings.catch_warnings():  # it reports again what this process reported already
                    warnings.filterwarnings("ignore", message="The reported value is ignored")
                    RUNNING.callback.check_pruned()  # under DDP the callback stops the fit; this raises TrialPruned
        except optuna.TrialPruned:
            return Outcome(TrialState.PRUNED)
        except (KeyboardInterrupt, SystemExit):  # Lightning's answer to Ctrl+C is sys.exit(1)
            return Outcome(TrialState.FAIL, cut_off="Ctrl+C", stop=128 + signal.SIGINT)
        except Interrupted as stop:
            return Outcome(TrialState.FAIL, cut_off=str(stop), stop=128 + stop.signum)
        except Exception as err:  # noqa: BLE001 - a crash of this trial's fit; the study goes on
            if os.environ.get("MNIST_LIT_DEBUG"):
                raise
            return Outcome(TrialState.FAIL, error=f"{type(err).__name__}: {one_line(err)}"[:500])
        finally:
            self._after_fit(environ, sys_argv)
        if status == 128 + signal.SIGTERM:
            return Outcome(TrialState.FAIL, cut_off="SIGTERM", stop=status)
        if status == 2:  # bad input that only the fit could see; it said which in its own line
            return Outcome(TrialState.FAIL, cut_off="bad input", stop=2)
        if status != 0:
            return Outcome(TrialState.FAIL, error="training diverged" if RUNNING.diverged else
                           f"fit ended with exit status {status} (its error is above)")
        if RUNNING.best is None:
            return Outcome(TrialState.FAIL, error=f"the fit logged no {MONITOR} (is --trainer.limit_val_batches 0?)")
        return Outcome(TrialState.COMPLETE, value=RUNNING.best)

    def _after_fit(self, environ: dict[str, str], argv: list[str]) -> None:
        """What one fit leaves in the process, put back for the next: the variables Lightning's DDP launcher sets (a
        LOCAL_RANK left behind would make the next fit wait for ranks nobody starts), the argv the fit set, the ranks
        that launcher started and their process group. Under torchrun the ranks stay for every trial."""
        self._end_ranks()
        sys.argv[:] = argv
        os.environ.clear()
        os.environ.update(environ)
        if self.store is None and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        self.signals.rearm()
        RUNNING.trial = None
        gc.collect()  # the fit's objects hold one another in cycles: without this each trial's data stays (55 MB)

    def _end_ranks(self) -> None:
        """Wait for the ranks Lightning's launcher started for the fit to exit (while this process still serves their
        store), then empty its list of them: the launcher's observer thread polls that list every 5 s for the rest of
        this process's life, and SIGKILLs this process, and the next trial's ranks with it, if one of them ended
        badly."""
        ranks = RUNNING.ranks or []
        for rank, child in enumerate(ranks, start=1):
            try:
                child.wait(timeout=RANKS_EXIT)
            except subprocess.TimeoutExpired:  # stuck in a collective rank 0 left (its fit failed)
                child.kill()
                child.wait()
            if child.returncode:
                print(f"tune: rank {rank} of this trial ended with exit status {child.returncode}", file=sys.stderr)
        ranks.clear()

    def publish(self, argv: list[str] | None) -> None:
        """Under torchrun: tell the other ranks the next trial's fit (None: there is none)."""
        if self.store is not None:
            self.published = publish(self.store, self.published, argv)
            if argv is None:
                self.store = None

    # -- the end --

    def report(self) -> int:
        """The table of trials, best.yaml, and the best trial's test accuracy."""
        trials = self.study.get_trials(deepcopy=False)
        names = list(self.space.params)
        rows = [["trial", "state", "val/acc", "epochs", *names, "run"]]
        for t in trials:
            value = "" if t.value is None else f"{t.value:.4f}"
            if t.state == TrialState.PRUNED and t.intermediate_values:
                value = f"({t.intermediate_values[max(t.intermediate_values)]:.4f})"
            why = t.user_attrs.get("error") or t.user_attrs.get("cut_off")
            state = t.state.name.lower() + (f": {why}" if why and t.state == TrialState.FAIL else "")
            rows.append([str(t.number), state[:40], value, str(t.user_attrs.get("epochs") or ""),
                         *[_shown(t.params.get(n)) for n in names], t.user_attrs.get("run", "")])
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        print(f"\nstudy {self.study_name} ({self.shown}): {len(trials)} trials")
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            print("no trial completed: no best trial yet")
            return 0
        best = max(complete, key=lambda t: (t.value, -t.number))
        path = self.folder / "best.yaml"
        config = fit_config([*self.base, *as_options({n: best.params[n] for n in names if n in best.params})])
        found = ", ".join(f"{n} {_shown(best.params[n])}" for n in names if n in best.params)
        header = (f"# tune --model {self.model}, study {self.study_name}: trial {best.number} of {len(trials)}, "
                  f"{MONITOR} {best.value:.4f}, with {found} ({best.user_attrs.get('run')}).\n"
                  f"# `python -m mnist_lit.cli fit --config {path}` trains it again, exactly.\n")
        with replaced_on_success(path) as tmp:
            Path(tmp).write_text(header + config["text"].split("\n", 1)[1])
        print(f"\nbest: trial {best.number}, {MONITOR} {best.value:.4f}; its recipe: {path}")
        test = best_test_accuracy(Path(best.user_attrs.get("run", "")))
        if test is not None:
            print(f"test accuracy of trial {best.number}'s checkpoint (tested once, after its fit): {test:.4f}")
        else:
            print(f"trial {best.number} ran on {best.user_attrs.get('host')}: its test accuracy is in its run folder "
                  f"there, {best.user_attrs.get('run')}")
        return 0


def _shown(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def best_test_accuracy(run: Path) -> float | None:
    """The ``test/acc`` a trial's fit logged last: the test of its checkpoint after the fit (None if not here)."""
    if not run.is_dir():
        return None
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload()
    if "test/acc" not in events.Tags()["scalars"]:
        return None
    return max(events.Scalars("test/acc"), key=lambda e: (e.wall_time, e.step)).value


def store_prefix() -> str:
    return f"mnist_lit/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/tune"


def publish(store: Any, index: int, argv: list[str] | None) -> int:
    """Leave the ``index``-th trial's fit arguments (None: the end) for torchrun's other ranks; the next index."""
    store.set(f"{store_prefix()}/{index}", json.dumps(argv))
    return index + 1


def follow() -> int:
    """A rank torchrun started other than 0: run each trial's fit that rank 0 names, until it names none."""
    store = launcher_store(FOLLOW_WAIT)
    status, i = 0, 0
    while True:
        argv = json.loads(store.get(f"{store_prefix()}/{i}").decode())
        i += 1
        if argv is None:
            return status
        environ, sys_argv = dict(os.environ), list(sys.argv)
        try:
            status = fit_cli.main(argv)
        except SystemExit:  # Lightning's answer to Ctrl+C
            status = 128 + signal.SIGINT
        finally:
            sys.argv[:] = sys_argv
            os.environ.clear()
            os.environ.update(environ)
            gc.collect()


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not the usage and a line
        raise UserError(message)


def parser() -> Parser:
    p = Parser(prog="python -m mnist_lit.cli tune", allow_abbrev=False,
               description="Search a recipe's options with Optuna: each trial is a `fit` run of the recipe with "
                           "options sampled from its search space, scored by its best validation accuracy (val/acc), "
                           "pruned early when the space's pruner says so. Run the same command again, or in several "
                           "processes or on several machines at once (--storage), to go on with the same study up to N "
                           "trials in all. Any other option is passed to every trial's fit (`fit --help`).",
               epilog="Results: lightning_logs/tune/STUDY/ (a TensorBoard run per trial, best.yaml). docs/tuning.md")
    p.add_argument("--model", required=True, metavar="NAME", help=f"the recipe: {', '.join(fit_cli.NETS)}")
    p.add_argument("--trials", required=True, type=_positive, metavar="N",
                   help="trials in all, counting those the study already has")
    p.add_argument("--space", metavar="FILE", help="the search space (default: configs/tune/NAME.yaml)")
    p.add_argument("--storage", metavar="URL",
                   help="a database shared by several machines, e.g. postgresql://USER:PASSWORD@HOST/DATABASE "
                        "(default: SQLite, lightning_logs/tune/STUDY/study.db)")
    p.add_argument("--study", metavar="NAME", help="the study's name (default: the recipe's)")
    p.add_argument("--heartbeat", type=_positive, default=HEARTBEAT, metavar="SECONDS",
                   help="a trial whose process stays silent for twice this long is failed and run again "
                        f"(default {HEARTBEAT})")
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def main(argv: list[str]) -> int:
    """``tune``: returns the exit status (0; 2 after a one-line error; 128 + the signal that stopped it)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # tune says what happens, in its own lines
    warnings.filterwarnings("ignore", category=ExperimentalWarning)  # heartbeats, fail_stale_trials: years old
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    if launcher_store() is not None and not first_process():
        return follow()
    tune = None
    try:
        args, fit_args = parser().parse_known_args(argv)
        tune = Tune(args, fit_args)
        return tune.run()
    except UserError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        if tune is None and launcher_store() is not None:  # the other ranks wait for a first trial
            publish(launcher_store(), 0, None)
        return 2
