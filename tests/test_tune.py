"""``tune``: an Optuna study of ``fit`` runs. Several processes on one study (SQLite beside the runs, or a real
PostgreSQL server standing for several machines), trials cut off by Ctrl+C, SIGTERM or SIGKILL and resumed, pruning,
``best.yaml``, DDP inside a trial, ranks started by torchrun, and bad input."""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lit.training import tune

# A few steps per trial, on real MNIST (as the other CLI tests: the CLI verifies the official files).
TINY = ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2",
        "--trainer.limit_test_batches", "2", "--data.eval_batch_size", "250", "--trainer.enable_progress_bar", "false"]
SPACE = {"model.lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
         "data.batch_size": {"type": "categorical", "choices": [32, 64]}, "pruner": "none"}

# Runs the real CLI and sends itself SIGNAL from inside the training step number STEP of the process (trials run in
# the tune process, one after another, so this is a given step of a given trial); on a machine named HOST.
STOPPING_CLI = """
import os, signal, socket, sys
hostname = socket.gethostname
socket.gethostname = lambda: "{host}" or hostname()
from mnist_lit import cli
from mnist_lit.models.classifier import MNISTClassifier

step, steps = MNISTClassifier.training_step, [0]

def stopping_step(self, batch, batch_idx):
    steps[0] += 1
    if steps[0] == {step}:
        os.kill(os.getpid(), signal.{name})
    return step(self, batch, batch_idx)

MNISTClassifier.training_step = stopping_step
sys.exit(cli.main())
"""


def space_file(folder: Path, space: dict | None = None, name: str = "space.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(space or SPACE))
    return path


def tune_args(space: Path, mnist_dir: str, trials: int, *more: str) -> list[str]:
    return ["tune", "--model", "mlp", "--trials", str(trials), "--space", str(space), "--data.data_dir", mnist_dir,
            *TINY, *more]


def start(args: list[str], cwd: Path, stop: tuple[str, int] | None = None, host: str = "") -> subprocess.Popen:
    program = ["-c", STOPPING_CLI.format(name=stop[0], step=stop[1], host=host)] if stop else ["-m", "mnist_lit.cli"]
    return subprocess.Popen([sys.executable, *program, *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(*processes: subprocess.Popen, timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Wait for each process; one still running after ``timeout`` fails the test with what it printed so far."""
    try:
        outputs = [p.communicate(timeout=timeout) for p in processes]
    except subprocess.TimeoutExpired as late:  # what it printed so far is in the exception, not in the pipes
        for p in processes:  # with the processes each started (its own group)
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        stderr = late.stderr.decode(errors="replace") if isinstance(late.stderr, bytes) else late.stderr or ""
        pytest.fail(f"still running after {timeout:.0f} s; it printed, at the end:\n{stderr[-6000:]}")
    return [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(processes, outputs)]


def problems(stderr: str) -> str:
    """What a failed run's stderr says went wrong: its tracebacks and error lines, or its end."""
    lines = stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Traceback")), None)
    said = [line for line in lines if line.startswith(("error:", "tune:"))]
    return "\n".join([*(lines[start:start + 60] if start is not None else lines[-40:]), *said])


def study(url: str, name: str = "mlp") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def embedded(cwd: Path, name: str = "mlp") -> str:
    return f"sqlite:///{cwd / 'lightning_logs' / 'tune' / name / 'study.db'}"


def states(trials) -> list[str]:
    return sorted(t.state.name for t in trials)


def val_acc_of_fit(stdout: str, cwd: Path) -> float:
    """The best val/acc of a `fit --select_on val` run: its checkpoint's score, as ModelCheckpoint recorded it."""
    best = next(line.split(": ", 1)[1] for line in stdout.splitlines() if line.startswith("best checkpoint: "))
    callbacks = torch.load(cwd / best, weights_only=True)["callbacks"]
    return next(float(state["best_model_score"]) for key, state in callbacks.items()
                if key.startswith("ModelCheckpoint") and state.get("monitor") == "val/acc")


# --- bad input: one line, exit status 2, nothing written --------------------------------------------------------------

BAD_SPACES = {
    "unknown option": ({"model.lrr": {"type": "float", "low": 0.001, "high": 0.01}},
                       "model.lrr is not an option tune can search for this recipe; did you mean model.lr"),
    "empty range": ({"model.lr": {"type": "float", "low": 0.01, "high": 0.001}},
                    "model.lr: empty range: low 0.01 is above high 0.001"),
    "no choices": ({"data.batch_size": {"type": "categorical", "choices": []}}, "data.batch_size: empty range"),
    "a value fit refuses": ({"data.batch_size": {"type": "int", "low": 0, "high": 64}},
                            "data.batch_size = 0: "),
    "log from 0": ({"model.weight_decay": {"type": "float", "low": 0, "high": 0.1, "log": True}},
                   "a log range must start above 0"),
    "unknown pruner": ({"model.lr": {"type": "float", "low": 0.001, "high": 0.01}, "pruner": "meridian"},
                       "pruner: type 'meridian' is none of median, hyperband"),
    "pruner option": ({"model.lr": {"type": "float", "low": 0.001, "high": 0.01},
                       "pruner": {"type": "median", "n_warmup": 1}}, "median has no option 'n_warmup'"),
    "searched and fixed": ({"trainer.max_epochs": {"type": "int", "low": 1, "high": 3}},
                           "--trainer.max_epochs is given on the command line and searched by"),
    "set by tune": ({"select_on": {"type": "categorical", "choices": ["val", "test"]}},
                    "select_on is not an option tune can search"),
}


def bad_storage_urls() -> dict[str, tuple[str, str]]:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {
        "unreachable server": (f"postgresql://tune:secret@127.0.0.1:{port}/optuna", "cannot connect: "),
        "not a URL": ("lightning_logs/study.db", "not a database URL"),
        "unknown database": ("nosuchdb://host/study", "no database driver for nosuchdb"),
        "missing folder": ("sqlite:///no/such/folder/study.db", "does not exist"),
    }


def run_in_process(argv: list[str], capsys) -> tuple[int, str, str]:
    status = tune.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def assert_refused(status: int, out: str, err: str, message: str, cwd: Path, keep: set[str]) -> None:
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err, err
    assert "secret" not in err, "a password in the URL is not shown"
    assert out == ""
    assert {p.name for p in cwd.iterdir()} == keep, "nothing written"


@pytest.mark.parametrize("case", list(BAD_SPACES))
def test_a_bad_space_file_is_one_line_exit_2_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    space, message = BAD_SPACES[case]
    path = space_file(tmp_path, space)
    status, out, err = run_in_process(["--model", "mlp", "--trials", "2", "--space", str(path),
                                       "--trainer.max_epochs", "2"], capsys)
    assert_refused(status, out, err, message, tmp_path, {"space.yaml"})


@pytest.mark.parametrize("case", ["unreachable server", "not a URL", "unknown database", "missing folder"])
def test_a_bad_storage_url_is_one_line_exit_2_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    url, message = bad_storage_urls()[case]
    status, out, err = run_in_process(["--model", "mlp", "--trials", "2", "--space", str(space_file(tmp_path)),
                                       "--storage", url], capsys)
    assert_refused(status, out, err, message, tmp_path, {"space.yaml"})


@pytest.mark.parametrize("args, message", [
    (["--model", "mlpp", "--trials", "2"], "unknown model 'mlpp'"),
    (["--model", "mlp"], "the following arguments are required: --trials"),
    (["--model", "mlp", "--trials", "0"], "0 is below 1"),
    (["--model", "mlp", "--trials", "2", "--trainer.nonsense", "1"], "trainer.nonsense"),
    (["--model", "mlp", "--trials", "2", "--ckpt_path", "last"], "--ckpt_path: tune sets it"),
    (["--model", "mlp", "--trials", "2", "--select_on", "test"], "--select_on: tune sets it"),
    (["--model", "mlp", "--trials", "2", "--space", "no-such.yaml"], "cannot read the space file no-such.yaml"),
    (["--model", "mlp", "--trials", "2", "--study", "../elsewhere"], "--study '../elsewhere': use letters"),
])
def test_bad_options_are_one_line_exit_2_and_write_nothing(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, out, err = run_in_process(args, capsys)
    assert_refused(status, out, err, message, tmp_path, set())


def test_a_study_started_with_another_space_is_refused(tmp_path, monkeypatch, capsys):
    """Going on with a study means the same search: another space (or model) for it is one line, exit status 2."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lightning_logs" / "tune" / "mlp").mkdir(parents=True)
    other = tune.read_space(space_file(tmp_path, {"model.lr": {"type": "float", "low": 0.1, "high": 0.2}}, "o.yaml"))
    started = optuna.create_study(study_name="mlp", storage=embedded(tmp_path), direction="maximize")
    started.set_user_attr("mnist_lit", {"model": "mlp", "space": other.identity()})
    status, out, err = run_in_process(["--model", "mlp", "--trials", "2", "--space", str(space_file(tmp_path))], capsys)
    assert status == 2 and err.count("\n") == 1, err
    assert "study mlp in sqlite:///" in err and "was started with another search space (mlp, model.lr)" in err
    assert study(embedded(tmp_path)).trials == [], "no trial was run"


def test_every_recipe_has_a_search_space_tune_accepts(tmp_path, monkeypatch, capsys):
    """configs/tune/NAME.yaml for each recipe: each option real, each range's ends and choices accepted by fit."""
    from mnist_lit.models.nets import NETS

    monkeypatch.chdir(tmp_path)
    for name in NETS:
        space = tune.read_space(tune.SPACES / f"{name}.yaml")
        base = ["--model", name, "--select_on", "val"]
        tune.check_space(space, base, tune.fit_config(base))
        assert space.make_pruner() is not None and space.make_sampler() is not None
    assert list(tmp_path.iterdir()) == []


# --- one study, several processes (slow: real MNIST training, subprocesses, a database server) --------------------


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, mnist_dir):
    """Two `tune --trials 4` started together in one folder, on the embedded study."""
    cwd = tmp_path_factory.mktemp("two")
    args = tune_args(space_file(cwd), mnist_dir, 4)
    runs = finish(start(args, cwd), start(args, cwd))
    return cwd, runs


@pytest.mark.slow
def test_two_processes_on_one_embedded_study_run_n_distinct_trials_in_all(two_processes):
    cwd, runs = two_processes
    assert all(run.returncode == 0 for run in runs), [run.stderr[-3000:] for run in runs]
    trials = study(embedded(cwd)).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3] and states(trials) == ["COMPLETE"] * 4
    assert len({(t.params["model.lr"], t.params["data.batch_size"]) for t in trials}) == 4, "distinct trials"
    folder = cwd / "lightning_logs" / "tune" / "mlp"
    assert sorted(p.name for p in (folder / "mlp").iterdir()) == [f"trial_{n}" for n in range(4)]
    for t in trials:  # each trial its own TensorBoard run, with its options as hyperparameters and its curve
        run = cwd / t.user_attrs["run"]
        events = EventAccumulator(str(run)).Reload()
        assert [e.value for e in events.Scalars("val/acc")][:2] == [t.intermediate_values[0], t.intermediate_values[1]]
        hparams = yaml.safe_load((run / "hparams.yaml").read_text())
        assert hparams["lr"] == t.params["model.lr"] and hparams["batch_size"] == t.params["data.batch_size"]
        assert t.value == max(t.intermediate_values.values())
    best = max(trials, key=lambda t: t.value)
    for run in runs:  # each process ends with the whole table
        assert f"best: trial {best.number}, val/acc {best.value:.4f}" in run.stdout, run.stdout
        assert sum(line.startswith(str(t.number) + " ") for t in trials for line in run.stdout.splitlines()) == 4
    assert (folder / "best.yaml").is_file()


@pytest.mark.slow
def test_best_yaml_reruns_the_best_trial_exactly(two_processes):
    cwd, _ = two_processes
    best = study(embedded(cwd)).best_trial
    rerun = subprocess.run([sys.executable, "-m", "mnist_lit.cli", "fit", "--config",
                            "lightning_logs/tune/mlp/best.yaml"], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert val_acc_of_fit(rerun.stdout, cwd) == pytest.approx(best.value, abs=1e-7)
    config = yaml.safe_load((cwd / "lightning_logs" / "tune" / "mlp" / "best.yaml").read_text())
    assert config["model"]["lr"] == best.params["model.lr"] and config["select_on"] == "val"


@pytest.mark.slow
def test_trials_cut_off_by_ctrl_c_sigterm_or_sigkill_are_failed_and_rerun_resumes_to_n(tmp_path, mnist_dir,
                                                                                        monkeypatch, capsys):
    """Ctrl+C and SIGTERM (in this process: trials run in the tune process), SIGKILL (a tune process of its own),
    each in mid-trial; then the same command finishes the study, running cut-off trials again."""
    monkeypatch.chdir(tmp_path)
    args = tune_args(space_file(tmp_path), mnist_dir, 3)
    url = embedded(tmp_path)
    # 2 epochs of 3 steps a trial: step 8 is in the second trial's first epoch
    with signal_at_step(monkeypatch, signal.SIGINT, 8):
        status, out, err = run_in_process(args[1:], capsys)
    assert status == 130, problems(err)
    assert "tune: trial 1 was cut off (Ctrl+C) and is marked failed; the same command runs it again" in err
    assert "Traceback" not in err
    trials = study(url).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "WAITING"]
    assert trials[2].params == trials[1].params, "queued to run again with the same options"

    with signal_at_step(monkeypatch, signal.SIGTERM, 3):  # the retried trial, in its first epoch
        status, out, err = run_in_process(args[1:], capsys)
    assert status == 143, problems(err)
    assert "tune: trial 2 was cut off (SIGTERM)" in err and "Traceback" not in err

    killed, = finish(start(args, tmp_path, stop=("SIGKILL", 3)))  # dies with its trial running
    assert killed.returncode == -signal.SIGKILL
    trials = study(url).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "FAIL", "RUNNING"]

    status, out, err = run_in_process(args[1:], capsys)
    assert status == 0, problems(err)
    assert "tune: trial 3 was cut off (its process died); it runs again" in err
    trials = study(url).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "FAIL", "FAIL", "COMPLETE", "COMPLETE"]
    assert [t.user_attrs.get("cut_off") for t in trials if t.state.name == "FAIL"] == \
        ["Ctrl+C", "SIGTERM", "its process died"]
    assert trials[2].params == trials[3].params == trials[1].params, "run again with the same options..."
    assert trials[3].system_attrs["retry_history"] == [1, 2]
    assert "retry_history" not in trials[4].system_attrs, f"... {tune.RETRIES} times at most"
    assert "best: trial" in out
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "tune put back the handlers it found"

    status, out, err = run_in_process(args[1:], capsys)  # the study has its 3: this only reports it
    assert status == 0 and "tune: trial" not in err and "best: trial" in out and len(study(url).trials) == 6


@contextlib.contextmanager
def signal_at_step(monkeypatch, signum: int, step: int):
    """This process sends itself ``signum`` in its training step number ``step`` (counted across trials)."""
    from mnist_lit.models.classifier import MNISTClassifier

    original, steps = MNISTClassifier.training_step, [0]

    def stopping_step(self, batch, batch_idx):
        steps[0] += 1
        if steps[0] == step:
            os.kill(os.getpid(), signum)
        return original(self, batch, batch_idx)

    with monkeypatch.context() as patch:
        patch.setattr(MNISTClassifier, "training_step", stopping_step)
        yield


@pytest.mark.slow
def test_a_pruned_trial_stops_early_and_is_recorded_as_pruned(tmp_path, mnist_dir, monkeypatch, capsys):
    """Two trials queued in the study beforehand (Optuna's enqueue_trial): a learning rate that learns, then one that
    cannot. The median pruner stops the second after its first epoch, below the first's."""
    monkeypatch.chdir(tmp_path)
    space = space_file(tmp_path, {"model.lr": {"type": "float", "low": 1.0e-9, "high": 1.0e-2, "log": True},
                                  "pruner": {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0}})
    (tmp_path / "lightning_logs" / "tune" / "mlp").mkdir(parents=True)
    queued = optuna.create_study(study_name="mlp", storage=embedded(tmp_path), direction="maximize")
    queued.enqueue_trial({"model.lr": 0.003})
    queued.enqueue_trial({"model.lr": 1.0e-9})
    args = ["--model", "mlp", "--trials", "2", "--space", str(space), "--data.data_dir", mnist_dir,
            "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "10", "--trainer.limit_val_batches", "2",
            "--trainer.limit_test_batches", "2", "--data.eval_batch_size", "250", "--trainer.enable_progress_bar",
            "false"]
    status, out, err = run_in_process(args, capsys)
    assert status == 0, err[-3000:]
    complete, pruned = study(embedded(tmp_path)).trials
    assert complete.state.name == "COMPLETE" and list(complete.intermediate_values) == [0, 1, 2]
    assert pruned.state.name == "PRUNED" and list(pruned.intermediate_values) == [0]
    assert pruned.user_attrs["epochs"] == 1 and "tune: trial 1 pruned after epoch 1" in err
    events = EventAccumulator(str(tmp_path / pruned.user_attrs["run"])).Reload()
    assert len(events.Scalars("val/acc")) == 1, "the pruned trial keeps its TensorBoard run, one epoch long"
    assert "1      pruned" in out


@pytest.mark.slow
def test_a_trial_that_trained_its_whole_budget_is_never_pruned(tmp_path, mnist_dir, monkeypatch, capsys):
    """The same two trials, one epoch each: the second is below the first's median, but pruning after the last epoch
    would save nothing, so it completes and counts (bench/TUNE.md found such trials recorded as pruned)."""
    monkeypatch.chdir(tmp_path)
    space = space_file(tmp_path, {"model.lr": {"type": "float", "low": 1.0e-9, "high": 1.0e-2, "log": True},
                                  "pruner": {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0}})
    (tmp_path / "lightning_logs" / "tune" / "mlp").mkdir(parents=True)
    queued = optuna.create_study(study_name="mlp", storage=embedded(tmp_path), direction="maximize")
    queued.enqueue_trial({"model.lr": 0.003})
    queued.enqueue_trial({"model.lr": 1.0e-9})
    args = ["--model", "mlp", "--trials", "2", "--space", str(space), "--data.data_dir", mnist_dir,
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "10", "--trainer.limit_val_batches", "2",
            "--trainer.limit_test_batches", "2", "--data.eval_batch_size", "250", "--trainer.enable_progress_bar",
            "false"]
    status, out, err = run_in_process(args, capsys)
    assert status == 0, err[-3000:]
    good, poor = study(embedded(tmp_path)).trials
    assert [good.state.name, poor.state.name] == ["COMPLETE", "COMPLETE"]
    assert list(poor.intermediate_values) == [0] and poor.value < good.value


# --- PostgreSQL, standing for several machines -----------------------------------------------------------------------


def postgres_program(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        pytest.fail(f"PostgreSQL's {name} is not installed: install Debian's postgresql package (.ci/run does)")
    return found


@pytest.fixture(scope="module")
def postgresql():
    """A PostgreSQL server of its own in a temporary folder (run as the postgres user when the tests run as root,
    which PostgreSQL refuses to be), with a database `optuna`; stopped and deleted afterwards."""
    from sqlalchemy import create_engine, text

    initdb, pg_ctl = postgres_program("initdb"), postgres_program("pg_ctl")
    folder = Path(tempfile.mkdtemp(prefix="mnist-lit-postgresql-"))
    as_user = []
    if os.getuid() == 0:
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"
    subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"], check=True,
                   capture_output=True, timeout=120)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"],
                   check=True, capture_output=True, timeout=120)
    try:
        engine = create_engine(f"postgresql://postgres@127.0.0.1:{port}/postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("CREATE DATABASE optuna"))
        engine.dispose()
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True,
                       timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_postgresql_study_shared_by_two_machines_resumes_after_a_machine_dies(tmp_path, mnist_dir, postgresql):
    """Two folders stand for two machines. One dies in its second trial; as another machine, whose processes this one
    cannot see, its trial is failed when its heartbeat stops, and the same command run again finishes the study."""
    machines = [tmp_path / "a", tmp_path / "b"]
    for machine in machines:
        machine.mkdir()
    space = space_file(tmp_path)
    args = tune_args(space, mnist_dir, 4, "--storage", postgresql, "--heartbeat", "1")
    # machine a dies in its second trial (step 8); machine b runs until the study has 4 trials, finished or running
    a = start(args, machines[0], stop=("SIGKILL", 8), host="machine-a")
    b = start(args, machines[1])
    assert finish(a)[0].returncode == -signal.SIGKILL
    b_done, = finish(b)
    assert b_done.returncode == 0, b_done.stderr[-3000:]
    trials = study(postgresql).get_trials()
    by_host = {host: [t for t in trials if t.user_attrs["host"] == host]
               for host in ("machine-a", socket.gethostname())}
    assert [t.state.name for t in by_host["machine-a"]] == ["COMPLETE", "FAIL"], "a died in its second trial"
    dead = by_host["machine-a"][1]
    assert "cut_off" not in dead.user_attrs, "failed by the others when its heartbeat stopped"
    assert [t.state.name for t in by_host[socket.gethostname()]] == ["COMPLETE"] * 3, "b ran the rest"
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retried) == 1 and retried[0].params == dead.params and retried[0].state.name == "COMPLETE"
    assert sorted(t.number for t in trials) == list(range(5))
    assert all((machines[1] / t.user_attrs["run"]).is_dir() for t in by_host[socket.gethostname()])
    assert "best: trial" in b_done.stdout and (machines[1] / "lightning_logs" / "tune" / "mlp" / "best.yaml").exists()


# --- several processes per trial -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ddp_with_two_cpu_processes_inside_each_trial_writes_one_result_per_trial(tmp_path, mnist_dir):
    args = tune_args(space_file(tmp_path), mnist_dir, 2, "--trainer.accelerator", "cpu", "--trainer.devices", "2",
                     "--trainer.strategy", "ddp")
    run, = finish(start(args, tmp_path), timeout=180)  # about 20 s alone here
    assert run.returncode == 0, problems(run.stderr)
    assert "terminate called" not in run.stderr and "ended with exit status" not in run.stderr, \
        "every rank of every trial exits cleanly"
    trials = study(embedded(tmp_path)).get_trials()
    assert [t.number for t in trials] == [0, 1] and states(trials) == ["COMPLETE"] * 2
    for t in trials:
        assert sorted(t.intermediate_values) == [0, 1], "one report per epoch, from rank 0"
        assert t.value == max(t.intermediate_values.values())
    runs = tmp_path / "lightning_logs" / "tune" / "mlp" / "mlp"
    assert sorted(p.name for p in runs.iterdir()) == ["trial_0", "trial_1"], "one run folder per trial"
    for t in trials:
        assert len(list((runs / f"trial_{t.number}").glob("events.out.tfevents.*"))) == 2, "rank 0's fit and test"
    assert not (tmp_path / "lightning_logs" / "mlp").exists(), "the other rank wrote no run of its own"


def torchrun(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "mnist_lit.cli", *args, "--trainer.accelerator", "cpu", "--trainer.devices", "2",
                             "--trainer.strategy", "ddp"], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


@pytest.mark.slow
def test_ranks_started_by_torchrun_resume_the_run_rank_0_picks(tmp_path, mnist_dir):
    """version_1 is newer but running (its folder locked, as a live run's is): rank 0 resumes version_0, and the other
    rank must too (on its own it would pick the newest, version_1, one epoch further on: the ranks would then train
    different numbers of epochs, and hang)."""
    fit = ["fit", "--model", "mlp", "--data.data_dir", mnist_dir, "--trainer.limit_train_batches", "3",
           "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2", "--trainer.enable_progress_bar",
           "false"]
    prepared = finish(*(start([*fit, "--trainer.max_epochs", epochs, "--trainer.logger.init_args.version",
                               str(version)], tmp_path) for version, epochs in enumerate(("1", "2"))))
    assert all(run.returncode == 0 for run in prepared), [problems(run.stderr) for run in prepared]
    runs = tmp_path / "lightning_logs" / "mlp"
    os.utime(runs / "version_0" / "checkpoints" / "last.ckpt", (time.time() - 60,) * 2)  # version_1 the newest
    running = os.open(runs / "version_1", os.O_RDONLY)
    fcntl.flock(running, fcntl.LOCK_EX)
    try:
        resumed, = finish(torchrun(*fit, "--trainer.max_epochs", "3", "--ckpt_path", "last", cwd=tmp_path),
                          timeout=240)
    finally:
        os.close(running)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming lightning_logs/mlp/version_0" in resumed.stderr
    assert torch.load(runs / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 2
    assert torch.load(runs / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1


@pytest.mark.slow
def test_tune_under_torchrun_runs_each_trial_on_every_rank_and_only_rank_0_talks_to_the_study(tmp_path, mnist_dir):
    args = tune_args(space_file(tmp_path), mnist_dir, 2)
    run, = finish(torchrun(*args, cwd=tmp_path), timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    trials = study(embedded(tmp_path)).get_trials()
    assert states(trials) == ["COMPLETE"] * 2 and all(sorted(t.intermediate_values) == [0, 1] for t in trials)
    assert run.stdout.count("best: trial") == 1, "one table, from rank 0"
    assert sorted(p.name for p in (tmp_path / "lightning_logs" / "tune" / "mlp" / "mlp").iterdir()) == \
        ["trial_0", "trial_1"]
    assert len({t.user_attrs["process"] for t in trials}) == 1, "rank 0 ran them all"
