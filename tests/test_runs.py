"""Runs started together each get their own version folder; a full disk, a read-only or deleted folder, or a diverging
run stop with one line that says what happened and what to do, and every checkpoint on disk still loads.

The ``fit`` processes here are real processes running the real CLI. They are forked by one launcher that has imported
Lightning once (4 s of the 5 a process takes to start on this machine), and released at the same instant.
"""

from __future__ import annotations

import errno
import json
import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mnist_lit.common.atomic_files import HOST, replaced_on_success
from mnist_lit.common.errors import WriteError, describe_write_fault, write_fault
from mnist_lit.training.resume import AtomicCheckpointIO
from mnist_lit.training.run_folders import RunLogger, in_use, last_checkpoint

pytestmark = pytest.mark.slow  # real MNIST training, subprocesses, servers or a browser

# Reads one JSON list of jobs per line ({"cwd", "args", "out"}), forks a process per job, releases them all at once,
# and answers one JSON line per batch: each job's pid and exit status. Its stdout and stderr go to out.stdout/.stderr
LAUNCHER = r"""
import json, os, sys, traceback
from mnist_lit import cli

for line in sys.stdin:
    jobs = json.loads(line)
    gate_r, gate_w = os.pipe()
    pids = []
    for job in jobs:
        pid = os.fork()
        if pid == 0:
            os.close(gate_w)
            os.chdir(job["cwd"])
            for fd, suffix in ((1, ".stdout"), (2, ".stderr")):
                os.dup2(os.open(job["out"] + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            sys.argv = ["mnist_lit.cli", *job["args"]]
            if "fail_save" in job:  # a simulated write fault: the Nth checkpoint save fails half-way
                import torch
                save, calls = torch.save, []

                def failing_save(obj, f, *args, **kwargs):
                    calls.append(1)
                    if len(calls) == job["fail_save"]["at"]:
                        f.write(b"PK half a checkpoint")
                        raise OSError(job["fail_save"]["errno"], os.strerror(job["fail_save"]["errno"]))
                    return save(obj, f, *args, **kwargs)

                torch.save = failing_save
            os.read(gate_r, 1)  # every job starts when the last one is forked
            try:
                code = cli.main()
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 1
            except BaseException:
                traceback.print_exc()
                code = 99
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(code)
        pids.append(pid)
    os.close(gate_r)
    os.write(gate_w, b"x" * len(jobs))
    os.close(gate_w)
    statuses = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    print(json.dumps([{"pid": p, "status": s} for p, s in zip(pids, statuses)]), flush=True)
"""

SHORT = ["fit", "--model", "mlp", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
         "--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2", "--data.eval_batch_size", "100",
         "--trainer.enable_progress_bar", "false"]


class Launcher:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.process = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.count = 0

    def run(self, *jobs: tuple) -> list[dict]:
        """Start every job, ``(cwd, args)`` or ``(cwd, args, {"fail_save": {"errno": E, "at": N}})``, at the same
        instant; each result has the job's pid, status, stdout and stderr."""
        specs = []
        for cwd, args, *extra in jobs:
            self.count += 1
            specs.append({"cwd": str(cwd), "args": [str(a) for a in args], "out": str(self.root / f"job{self.count}"),
                          **(extra[0] if extra else {})})
        self.process.stdin.write(json.dumps(specs) + "\n")
        self.process.stdin.flush()
        if not select.select([self.process.stdout], [], [], 600)[0]:  # a hung run fails the test, not the suite
            self.process.kill()
            pytest.fail(f"jobs still running after 10 minutes: {specs}")
        line = self.process.stdout.readline()
        assert line, "the launcher died"
        results = json.loads(line)
        for spec, result in zip(specs, results):
            result["stdout"] = Path(spec["out"] + ".stdout").read_text()
            result["stderr"] = Path(spec["out"] + ".stderr").read_text()
        return results

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def launcher(tmp_path_factory, mnist_dir):
    launcher = Launcher(tmp_path_factory.mktemp("launcher"))
    yield launcher
    launcher.close()


def error_line(result: dict) -> str:
    """The run's one error line, after checking that it is the only one and that no traceback came with it."""
    assert "Traceback" not in result["stderr"], result["stderr"][-3000:]
    errors = [line for line in result["stderr"].splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result["stderr"][-3000:]
    assert result["stderr"].rstrip().endswith(errors[0])
    return errors[0]


def loads(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def no_temporary_files(root: Path) -> None:
    assert not [p for p in root.rglob("*.part")], sorted(root.rglob("*.part"))


# --- runs started together -------------------------------------------------------------------------------------------


def test_runs_started_together_each_get_their_own_folder(launcher, mnist_dir, tmp_path):
    lrs = [f"0.00{i}" for i in range(1, 9)]
    results = []
    for batch in (lrs[:4], lrs[4:]):  # four at once, twice: into an empty folder, then beside existing runs
        results += launcher.run(*[(tmp_path, [*SHORT, "--data.data_dir", mnist_dir, "--model.lr", lr]) for lr in batch])
    runs = tmp_path / "lightning_logs" / "mlp"
    assert sorted(p.name for p in runs.iterdir()) == [f"version_{i}" for i in range(8)]
    for lr, result in zip(lrs, results):
        assert result["status"] == 0, result["stderr"][-3000:]
        assert "litlogger" not in result["stdout"] + result["stderr"], "no advertising at start-up"
        assert "smaller than the logging interval" in result["stderr"], "Lightning's real warnings still show"
        best = re.search(r"best checkpoint: (\S+)", result["stdout"]).group(1)
        folder = tmp_path / Path(best).parent.parent
        # the folder's config, checkpoints and TensorBoard events are this process's and no other's
        assert yaml.safe_load((folder / "config.yaml").read_text())["model"]["lr"] == float(lr)
        assert loads(folder / "checkpoints" / "last.ckpt")["hyper_parameters"]["lr"] == float(lr)
        events = list(folder.glob("events.out.tfevents.*"))
        assert events and {p.name.split(".")[-2] for p in events} == {str(result["pid"])}, events
        assert sorted(p.name for p in (folder / "checkpoints").glob("*.ckpt"))[-1] == "last.ckpt"
    no_temporary_files(runs)

    # Named runs: an explicit version resumes that run and no other; an existing one is not reused by a new run
    before = {p: p.stat().st_mtime_ns for p in runs.glob("*/checkpoints/last.ckpt")}
    resumed, taken, new = launcher.run(
        (tmp_path, [*SHORT, "--data.data_dir", mnist_dir, "--model.lr", lrs[2], "--trainer.max_epochs", "2",
                    "--ckpt_path", "last", "--trainer.logger.init_args.version", "version_2"]),
        (tmp_path, [*SHORT, "--data.data_dir", mnist_dir, "--trainer.logger.init_args.version", "version_5"]),
        (tmp_path, [*SHORT, "--data.data_dir", mnist_dir, "--trainer.logger.init_args.version", "lr-sweep-a"]))
    assert resumed["status"] == 0, resumed["stderr"][-3000:]
    last = loads(runs / "version_2" / "checkpoints" / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (1, 6)  # on from version_2's 3 steps
    assert {p for p, mtime in before.items() if p.stat().st_mtime_ns != mtime} == {
        runs / "version_2" / "checkpoints" / "last.ckpt"}
    assert str(resumed["pid"]) in {p.name.split(".")[-2] for p in (runs / "version_2").glob("events.out.tfevents.*")}
    assert taken["status"] == 2
    assert error_line(taken) == ("error: lightning_logs/mlp/version_5 exists already: name a new version, or add "
                                 "--ckpt_path last to resume that run")
    assert new["status"] == 0, new["stderr"][-3000:]
    assert sorted(p.name for p in runs.iterdir()) == ["lr-sweep-a", *(f"version_{i}" for i in range(8))]
    assert loads(runs / "lr-sweep-a" / "checkpoints" / "last.ckpt")["epoch"] == 0


def claim(root: str, gate: int) -> None:
    os.read(gate, 1)
    os.write(1, f"{RunLogger(root, name='mlp').version}\n".encode())


def test_version_claims_never_collide(tmp_path):
    """Eight processes ask for a version at the same instant, ten times over: 80 different folders."""
    for _ in range(10):
        gate_r, gate_w = os.pipe()
        pipe_r, pipe_w = os.pipe()
        pids = []
        for _ in range(8):
            pid = os.fork()
            if pid == 0:  # nothing but file-system calls in the child
                os.dup2(pipe_w, 1)
                try:
                    claim(str(tmp_path), gate_r)
                finally:
                    os._exit(0)
            pids.append(pid)
        os.close(pipe_w)
        os.write(gate_w, b"x" * 8)
        for pid in pids:
            os.waitpid(pid, 0)
        with os.fdopen(pipe_r) as out:
            versions = out.read().split()
        for fd in (gate_r, gate_w):
            os.close(fd)
        assert len(versions) == 8 and len(set(versions)) == 8, versions
    assert sorted(int(p.name.split("_")[1]) for p in (tmp_path / "mlp").iterdir()) == list(range(80))


def test_a_running_run_is_locked_and_not_resumed(tmp_path):
    stopped = tmp_path / "mlp" / "version_0" / "checkpoints" / "last.ckpt"
    stopped.parent.mkdir(parents=True)
    stopped.write_bytes(b"a stopped run's checkpoint")
    running = RunLogger(tmp_path, name="mlp")  # holds version_1 as a live run does
    folder = tmp_path / "mlp" / f"version_{running.version}"
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"newer, but its run is still going")
    assert in_use(folder) and not in_use(stopped.parent.parent)
    assert last_checkpoint(tmp_path / "mlp", None) == stopped
    with pytest.raises(ValueError, match="in use by a running process"):
        last_checkpoint(tmp_path / "mlp", running.version)
    with pytest.raises(ValueError, match="in use by another running process"):
        RunLogger(tmp_path, name="mlp", version=running.version, exist_ok=True).version


# --- temporary files -------------------------------------------------------------------------------------------------


def test_leftover_sweep_removes_only_dead_processes_files(tmp_path):
    target = tmp_path / "last.ckpt"
    live = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        files = {name: tmp_path / f".last.ckpt.{HOST}-{proc.pid}.abc123.part" for name, proc in
                 (("live", live), ("dead", dead))}
        files["other host"] = tmp_path / f".last.ckpt.elsewhere-{dead.pid}.abc123.part"
        for path in files.values():
            path.write_bytes(b"being written")
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(2)}, target)
        assert files["live"].exists() and files["other host"].exists() and not files["dead"].exists()
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()


# --- write faults ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_failed_write_names_the_file_and_leaves_the_old_one(tmp_path, code):
    """Simulated at the write itself: as root, permission bits do not stop a write."""
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(2)}, target)

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"PK half a checkpoint")
        raise OSError(code, os.strerror(code))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "save", failing_save)
        with pytest.raises(WriteError) as raised:
            AtomicCheckpointIO().save_checkpoint({"w": torch.ones(2)}, target)
    assert raised.value.errno == code and raised.value.filename == str(target)
    assert torch.equal(loads(target)["w"], torch.zeros(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_folder_deleted_during_the_run_is_not_quietly_made_again(tmp_path):
    io = AtomicCheckpointIO()
    folder = tmp_path / "version_0" / "checkpoints"
    io.save_checkpoint({"w": torch.zeros(2)}, folder / "last.ckpt")
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    with pytest.raises(WriteError) as raised:
        io.save_checkpoint({"w": torch.ones(2)}, folder / "last.ckpt")
    assert raised.value.errno == errno.ENOENT and raised.value.filename == str(folder / "last.ckpt")
    assert describe_write_fault(write_fault(raised.value)) == (
        f"{folder / 'last.ckpt'}: cannot write (its folder was deleted: No such file or directory)")
    assert not folder.exists()


def test_write_faults_in_other_files_name_the_file(tmp_path):
    target = tmp_path / "predictions.csv"
    with pytest.raises(WriteError) as raised, replaced_on_success(target) as tmp:
        tmp.write_text("index,digit\n")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert raised.value.filename == str(target) and list(tmp_path.iterdir()) == []


def mount_tmpfs(folder: Path, size: str, *options: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def test_a_full_disk_stops_the_run_in_one_line_and_it_resumes_once_space_is_freed(launcher, mnist_dir, tmp_path):
    """A real full file system (a 12 MB tmpfs, with 6 MB taken by another file) where the machine lets us mount one."""
    disk = tmp_path / "disk"
    run = [*SHORT, "--data.data_dir", mnist_dir, "--trainer.max_epochs", "2"]
    if mount_tmpfs(disk, "12m"):
        try:
            filler = disk / "someone-elses-file"
            filler.write_bytes(b"\0" * 6_000_000)
            full, = launcher.run((disk, run))
            line = error_line(full)
            folder = disk / "lightning_logs" / "mlp" / "version_0"
            checkpoints = sorted((folder / "checkpoints").glob("*.ckpt"))
            assert full["status"] == 1
            assert re.fullmatch(
                r"error: lightning_logs/mlp/version_0/\S+: cannot write \(disk full: No space left on device\); the "
                r"checkpoints already written are whole\. Free some space, then run the same command with --ckpt_path "
                r"last --trainer.logger.init_args.version version_0: it resumes from "
                r"lightning_logs/mlp/version_0/checkpoints/last\.ckpt, saved (before the first step|after epoch 0)",
                line), line
            assert checkpoints and all("state_dict" in loads(p) for p in checkpoints)
            no_temporary_files(disk)

            filler.unlink()
            resumed, = launcher.run((disk, [*run, "--ckpt_path", "last", "--trainer.logger.init_args.version",
                                            "version_0"]))
            assert resumed["status"] == 0, resumed["stderr"][-3000:]
            assert loads(folder / "checkpoints" / "last.ckpt")["epoch"] == 1
            assert "best checkpoint: lightning_logs/mlp/version_0/" in resumed["stdout"]
            no_temporary_files(disk)
        finally:
            subprocess.run(["umount", str(disk)], check=True)
    else:  # no mount allowed here: the same run, its third checkpoint save failing as on a full disk
        full, = launcher.run((disk, run, {"fail_save": {"errno": errno.ENOSPC, "at": 3}}))
        assert full["status"] == 1 and "disk full" in error_line(full)
        resumed, = launcher.run((disk, [*run, "--ckpt_path", "last", "--trainer.logger.init_args.version",
                                        "version_0"]))
        assert resumed["status"] == 0, resumed["stderr"][-3000:]
        assert loads(disk / "lightning_logs" / "mlp" / "version_0" / "checkpoints" / "last.ckpt")["epoch"] == 1


def test_a_read_only_log_folder_stops_the_run_before_it_starts(launcher, mnist_dir, tmp_path):
    logs = tmp_path / "lightning_logs"
    mounted = mount_tmpfs(logs, "1m", "ro")
    if not mounted:  # without mount, a folder only permissions protect (which root ignores: then simulated)
        logs.chmod(0o555)
    try:
        result, = launcher.run((tmp_path, [*SHORT, "--data.data_dir", mnist_dir],
                                {} if mounted or os.geteuid() else {"fail_save": {"errno": errno.EACCES, "at": 1}}))
    finally:
        if mounted:
            subprocess.run(["umount", str(logs)], check=True)
    assert result["status"] == 1
    line = error_line(result)
    if mounted:
        assert line == ("error: lightning_logs/mlp: cannot write (read-only file system). "
                        "Make it writable, then run the same command again"), line
    else:
        assert "cannot write (permission denied" in line, line


# --- divergence ------------------------------------------------------------------------------------------------------


def test_a_diverging_run_stops_after_the_epoch_and_fails(launcher, mnist_dir, tmp_path):
    result, = launcher.run((tmp_path, [*SHORT, "--data.data_dir", mnist_dir, "--model.lr", "1e6",
                                       "--trainer.max_epochs", "3"]))
    assert result["status"] == 1
    line = error_line(result)
    assert re.fullmatch(r"error: training diverged in epoch 0: its mean training loss was \S+ "
                        r"\(--divergence\.max_loss 100\), so the run stopped after that epoch; try a lower learning "
                        r"rate than --model\.lr 1e\+06\. The best checkpoint so far is kept: (\S+)", line), line
    best = tmp_path / line.rsplit(" ", 1)[1]
    assert "state_dict" in loads(best)
    assert loads(best.parent / "last.ckpt")["epoch"] == 0, "stopped after epoch 0 of 3"


def test_export_and_contact_sheet_on_a_full_disk_say_so_and_leave_nothing(ckpt, tmp_path, capsys):
    from PIL import Image

    from mnist_lit.inference.export import main as export
    from mnist_lit.inference.predict_images import main as predict_images

    image = tmp_path / "digit.png"
    one = Image.new("L", (28, 28))
    one.paste(255, (13, 4, 16, 24))  # a white stroke on black: a 1
    one.save(image)
    disk = tmp_path / "disk"
    mounted = mount_tmpfs(disk, "64k")
    try:
        if mounted:
            (disk / "filler").write_bytes(b"\0" * 65_536)  # every block taken
        with pytest.MonkeyPatch.context() as mp:
            if not mounted:  # no mount allowed here: the writes themselves fail as on a full disk
                def no_space(*args, **kwargs):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

                mp.setattr(torch.jit, "save", no_space)
                mp.setattr(Image.Image, "save", no_space)
            assert export(["--ckpt", str(ckpt), "--format", "torchscript", "--out", str(disk / "m.pt"),
                           "--no-check"]) == 1
            assert predict_images(["--ckpt", str(ckpt), str(image), "--sheet", str(disk / "sheet.png")]) == 1
        errors = capsys.readouterr().err.splitlines()
        assert errors == [f"error: {disk / 'm.pt'}: cannot write (disk full: No space left on device); nothing was "
                          f"written: free some space and run the command again",
                          f"error: {disk / 'sheet.png'}: cannot write (disk full: No space left on device): free some "
                          f"space and run the command again"], errors
        assert sorted(p.name for p in disk.iterdir()) == (["filler"] if mounted else [])
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)
