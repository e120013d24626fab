"""What the benchmarks share: the recipes, the data split, the one tutorial-loop baseline, runs of the CLI, runs in a
fresh process, and the header every results file starts with. MNIST is read from $MNIST_LIT_DATA_DIR, else ./data.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from importlib import import_module
from importlib.metadata import version
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = os.environ.get("MNIST_LIT_DATA_DIR", str(ROOT / "data"))
CLI = [sys.executable, "-m", "mnist_lit.cli"]
PLAIN_DEFAULTS = {"optimizer": "adam", "momentum": 0.0, "weight_decay": 0.0, "warmup_steps": 0, "betas": (0.9, 0.999),
                  "scheduler": "none", "pct_start": 0.25}  # plain_loop's model options besides net, normalization, lr


def recipe(name: str) -> dict:
    return yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """A command to its end, its output captured as text; its exit status is the caller's to judge."""
    return subprocess.run(args, check=False, capture_output=True, text=True, **kwargs)


def parser(doc: str, out: str | None = None, photos: bool = False) -> argparse.ArgumentParser:
    """The script's options: --data-dir, --out (default ``bench/OUT``), with ``photos`` --ckpt and --count."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DATA_DIR, help="folder holding MNIST/raw")
    if out:
        parser.add_argument("--out", default=str(ROOT / "bench" / out))
    if photos:
        parser.add_argument("--ckpt", required=True, help="a .ckpt written by `python -m mnist_lit.cli fit`")
        parser.add_argument("--count", type=int, default=1000, help="photographed test digits (default 1000)")
    return parser


def commit() -> str:
    """HEAD's short hash, and whether the code measured (mnist_lit, configs, bench's scripts) differs from it."""
    git = ["git", "-C", str(ROOT)]
    head = run([*git, "rev-parse", "--short", "HEAD"]).stdout.strip() or "unknown"
    changed = run([*git, "status", "--porcelain", "--", "mnist_lit", "configs", "bench/*.py", "bench/*.sh"]).stdout
    return head + (" with uncommitted changes" if changed else "")


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()}, {os.cpu_count()} CPUs ({torch.get_num_threads()} torch threads), {gpu}, "
            f"1-minute load {os.getloadavg()[0]:.1f} when written; torch {torch.__version__}, lightning "
            f"{version('lightning')}, Python {platform.python_version()}")


def this_run() -> dict:
    """This run's command line (as typed in the repository root), date, commit and machine."""
    return {"command": shlex.join(["python", "-m", f"bench.{Path(sys.argv[0]).stem}", *sys.argv[1:]]),
            "date": str(date.today()), "commit": commit(), "machine": machine()}


def header(title: str, intro: str, runs: list[dict] | None = None) -> list[str]:
    """The top of a results file: title, date, machine, command (and ``runs``, those of its rows), commit, ``intro``."""
    now, runs = this_run(), dict.fromkeys(f"`{r['command']}` ({r['date']}, {r['commit']})" for r in runs or [])
    return [f"# {title}", "", f"Date: {now['date']}. Machine: {now['machine']}. Commit: {now['commit']}.", "",
            f"Command: `{now['command']}`" + (". Rows from: " + "; ".join(runs) if runs else ""), "", intro, ""]


def table(*head: str) -> list[str]:
    """A Markdown table's first two lines."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]


def write(path: str | Path, lines: list[str]) -> None:
    Path(path).write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def mean_sd(values: list[float], scale: float = 1.0, digits: int = 2, sign: str = "", se: bool = False) -> str:
    """Mean ± standard deviation (``se``: ± the mean's standard error); a single value alone."""
    values = [scale * v for v in values]
    spread = f" ± {statistics.stdev(values) / (len(values) ** 0.5 if se else 1):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):{sign}.{digits}f}{spread}"


def fresh(function: str, **kwargs) -> dict:
    """``MODULE:FUNCTION(**kwargs)`` in a fresh process: its JSON result (a dict gets the process's peak ``rss_mb``)."""
    done = run([sys.executable, "-m", "bench.common", function, json.dumps(kwargs)], cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"error: {function}({kwargs}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fit_cli(args: list[str], data_dir: str = DATA_DIR, cwd: str | None = None, env: dict | None = None) -> dict:
    """``python -m mnist_lit.cli fit ARGS`` as a user runs it, in a temporary folder unless ``cwd``: its test accuracy,
    best checkpoint and wall time. PYTHONPATH lets ``--trainer.callbacks+=bench.…`` find this package from there."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        Path(cwd or tmp).mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        done = run([*CLI, "fit", *args, "--data.data_dir", data_dir], cwd=cwd or tmp,
                   env={**os.environ, "PYTHONPATH": path, **(env or {})})
        seconds = time.perf_counter() - start
    shown = shlex.join(["python", "-m", "mnist_lit.cli", "fit", *args])
    acc = re.search(r"^test accuracy: ([0-9.]+)$", done.stdout, re.MULTILINE)
    best = re.search(r"^best checkpoint: (.+)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or not acc:
        raise SystemExit(f"error: `{shown}` failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return {"acc": float(acc.group(1)), "best": best and best.group(1), "seconds": seconds, "command": shown}


def trainer_fit(name: str, seed: int, epochs: int, data_dir: str = DATA_DIR, callbacks: tuple = (), test: bool = True,
                precision: str = "32-true", compile_net: bool = False, **model) -> dict:
    """``Trainer.fit`` of the recipe's MNISTClassifier (``model`` overrides its options) and MNISTDataModule, with no
    logger, checkpoint, progress bar or evaluation; then the test set. Seconds: fit's wall time."""
    import lightning as L

    from mnist_lit.data.datamodule import MNISTDataModule
    from mnist_lit.models.classifier import MNISTClassifier

    cfg = recipe(name)
    L.seed_everything(seed, verbose=False)
    dm = MNISTDataModule(data_dir=data_dir, **cfg["data"])
    net = MNISTClassifier(**{**cfg["model"], **model})
    if compile_net:
        net.net.compile()  # in place: the state_dict keeps its keys; compile time counts as training time
    trainer = L.Trainer(max_epochs=epochs, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, precision=precision, callbacks=list(callbacks))
    start = time.perf_counter()
    trainer.fit(net, datamodule=dm)
    seconds = time.perf_counter() - start
    acc = trainer.test(net, datamodule=dm, verbose=False)[0]["test/acc"] if test else None
    return {"seconds": seconds, "samples": trainer.num_training_batches * cfg["data"]["batch_size"] * epochs, "acc": acc}


def plain_loop(name: str, seed: int, epochs: int, steps: int | None = None, bare: bool = False,
               data_dir: str = DATA_DIR, max_seconds: float | None = None, stop_at: float | None = None,
               device: str = "cpu") -> dict:
    """The recipe's network, optimizer and schedule (warm-up or OneCycle stepped per batch) in a plain PyTorch loop.

    ``bare=False``, the tutorials' loop, the baseline: torchvision's MNIST (all 60,000 training images) with
    per-sample ``ToTensor``/``Normalize``, ``DataLoader(batch_size=the recipe's, shuffle=True)``. ``bare=True``, every
    trick mnist_lit uses without Lightning: the DataModule's training split as one uint8 tensor, a batch by one
    indexing operation, ``normalize`` per batch, channels_last, a foreach optimizer. Both score the official 10,000
    test digits. ``stop_at``: a test after every epoch (``curve``), not counted as training, and a stop once it
    reaches that; ``max_seconds`` caps training (checked every step), ``steps`` each epoch. ``device``: where the
    network trains, each batch copied there with ``.to(device)`` (the device synchronised at each epoch's ends)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from mnist_lit.data.datamodule import MNISTDataModule
    from mnist_lit.data.normalization import NORMALIZATIONS, normalize
    from mnist_lit.models.nets import build_net

    cfg = recipe(name)
    hp = {**PLAIN_DEFAULTS, **cfg["model"]}
    norm, batch = hp["normalization"], cfg["data"]["batch_size"]
    torch.manual_seed(seed)
    net, device = build_net(hp["net"]).to(device), torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    conv = bare and any(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    if conv:
        net.to(memory_format=torch.channels_last)
    if bare:
        dm = MNISTDataModule(data_dir=data_dir, **cfg["data"])
        dm.prepare_data()
        dm.setup()
        images, labels = dm.train_set.images, dm.train_set.labels
        test_set = dm.test_set.images, dm.test_set.labels
        per_epoch = len(labels) // batch

        def batches(epoch: int):
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed + epoch))
            for index in order[:per_epoch * batch].split(batch):
                x = normalize(images[index], norm)
                yield (x.contiguous(memory_format=torch.channels_last) if conv else x), labels[index]
    else:
        mean, std = NORMALIZATIONS[norm]
        to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
        train = datasets.MNIST(data_dir, train=True, transform=to_tensor)
        official = datasets.MNIST(data_dir, train=False)
        test_set = official.data, official.targets
        loader = DataLoader(train, batch_size=batch, shuffle=True)
        per_epoch, batches = len(loader), lambda epoch: iter(loader)
    per_epoch = min(per_epoch, steps or per_epoch)
    optimizer, options = ((torch.optim.SGD, {"momentum": hp["momentum"]}) if hp["optimizer"] == "sgd"
                          else (torch.optim.Adam, {"betas": tuple(hp["betas"])}))
    opt = optimizer(net.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"], foreach=bare or None, **options)
    warmup, schedulers = hp["warmup_steps"], torch.optim.lr_scheduler
    schedule = (schedulers.OneCycleLR(opt, max_lr=hp["lr"], total_steps=epochs * per_epoch, pct_start=hp["pct_start"],
                                      cycle_momentum=False)  # as tuomaso/train_mnist_fast: per batch, beta1 fixed
                if hp["scheduler"] == "onecycle" else schedulers.LinearLR(opt, 1 / warmup, 1.0, warmup) if warmup else None)

    def test_accuracy() -> float:
        net.eval()
        with torch.no_grad():
            correct = sum(int((net(normalize(x, norm).to(device)).argmax(1) == y.to(device)).sum())
                          for x, y in zip(test_set[0].split(1000), test_set[1].split(1000)))
        net.train()
        return correct / len(test_set[1])

    seconds, samples, points = [], 0, []
    for epoch in range(epochs):
        sync()
        trained, start = sum(seconds), time.perf_counter()
        for i, (x, y) in enumerate(batches(epoch)):
            if i >= per_epoch or max_seconds and trained + time.perf_counter() - start > max_seconds:
                break
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if schedule:
                schedule.step()
            samples += len(y)
        sync()
        seconds.append(time.perf_counter() - start)
        if stop_at:
            points.append({"epoch": epoch, "seconds": sum(seconds), "test_acc": test_accuracy()})
            if points[-1]["test_acc"] >= stop_at:
                break
        if max_seconds and sum(seconds) > max_seconds:
            break
    return {"epochs": seconds, "seconds": sum(seconds), "samples": samples, "acc": test_accuracy(), "curve": points}


def photo_folder(folder: Path, count: int, data_dir: str) -> tuple[list[Path], np.ndarray]:
    """The first ``count`` test digits photographed (tests.digits.photograph, seed 0) as NNNN.png: paths, labels."""
    from tests.digits import photograph, test_digits

    digits, labels = test_digits(Path(data_dir), count)
    rng, paths = np.random.default_rng(0), [folder / f"{i:04d}.png" for i in range(len(digits))]
    folder.mkdir(parents=True, exist_ok=True)
    for digit, path in zip(digits, paths):
        photograph(digit, rng).convert("RGB").save(path)
    return paths, labels


def predict_images(ckpt: str, paths: list[Path], labels: np.ndarray, options: tuple | list = (),
                   cwd: Path | None = None) -> dict:
    """``predict-images --format csv`` as a user runs it, launch to exit: wall time, images/s, accuracy (the label
    from each file's name). Exit 1 (some file unreadable) is a result; any other failure stops the benchmark."""
    start = time.perf_counter()
    done = run([*CLI, "predict-images", "--ckpt", ckpt, "--format", "csv", *options, *map(str, paths)], cwd=cwd)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"error: predict-images exited {done.returncode}:\n{done.stderr[-3000:]}")
    rows = list(csv.DictReader(done.stdout.splitlines()))
    correct = sum(r["digit"] != "" and int(r["digit"]) == labels[int(Path(r["path"]).stem)] for r in rows)
    return {"seconds": seconds, "per_s": len(rows) / seconds, "correct": correct, "n": len(rows),
            "failed": sum(r["digit"] == "" for r in rows), "exit": done.returncode}


def checkpoint(path: str) -> tuple[str, str]:
    """--ckpt's absolute path and the name of its network."""
    import torch

    return str(Path(path).resolve()), torch.load(path, map_location="cpu", weights_only=True)["hyper_parameters"]["net"]


if __name__ == "__main__":  # fresh(): python -m bench.common MODULE:FUNCTION JSON
    module, function = sys.argv[1].split(":")
    result = getattr(import_module(module), function)(**json.loads(sys.argv[2]))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({**result, "rss_mb": rss_mb} if isinstance(result, dict) else result))
