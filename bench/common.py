"""What the benchmarks share: recipes, the data split, the tutorial-loop baseline, runs of the CLI and in a fresh
process, every results file's header. MNIST is read from $MNIST_LIT_DATA_DIR, else ./data."""

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


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:  # its exit status is the caller's to judge
    return subprocess.run(args, check=False, capture_output=True, text=True, **kwargs)


def option(flag: str, **keywords) -> tuple[str, dict]:
    return flag, keywords


def arguments(doc: str, *options: tuple[str, dict], out: str | None = None, photos: bool = False) -> argparse.Namespace:
    """Parsed: --data-dir, --out (default bench/OUT), with ``photos`` --ckpt and --count, and each ``option(...)``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--data-dir", default=DATA_DIR, help="folder holding MNIST/raw")
    if out:
        parser.add_argument("--out", default=str(ROOT / "bench" / out))
    if photos:
        parser.add_argument("--ckpt", required=True, help="a .ckpt written by `python -m mnist_lit.cli fit`")
        parser.add_argument("--count", type=int, default=1000, help="photographed test digits (default 1000)")
    for flag, keywords in options:
        parser.add_argument(flag, **keywords)
    return parser.parse_args()


def commit() -> str:
    """HEAD's short hash, and whether the code measured (mnist_lit, configs, bench's scripts) differs from it."""
    git = ["git", "-C", str(ROOT)]
    head = run([*git, "rev-parse", "--short", "HEAD"]).stdout.strip() or "unknown"
    changed = run([*git, "status", "--porcelain", "--", "mnist_lit", "configs", "bench/*.py", "bench/*.sh"]).stdout
    return head + (" with uncommitted changes" if changed else "")


def this_run() -> dict:
    """This run's command line (as typed in the repository root), date, commit and machine."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return {"command": shlex.join(["python", "-m", f"bench.{Path(sys.argv[0]).stem}", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d"), "commit": commit(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs ({torch.get_num_threads()} torch threads), {gpu}, "
                       f"1-minute load {os.getloadavg()[0]:.1f} when written; torch {torch.__version__}, lightning "
                       f"{version('lightning')}, Python {platform.python_version()}"}


def header(title: str, intro: str, runs: list[dict] | None = None) -> list[str]:
    """The top of a results file: title, date, machine, command (and ``runs``, those of its rows), commit, ``intro``."""
    now, runs = this_run(), dict.fromkeys(f"`{r['command']}` ({r['date']}, {r['commit']})" for r in runs or [])
    return [f"# {title}", "", f"Date: {now['date']}. Machine: {now['machine']}. Commit: {now['commit']}.", "",
            f"Command: `{now['command']}`" + (". Rows from: " + "; ".join(runs) if runs else ""), "", intro, ""]


def table(*head: str) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]


def write(path: str | Path, lines: list[str]) -> None:  # and show it
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


def fit_cli(model: str, seed: int, *args: str, data_dir: str = DATA_DIR, bar: bool = False, cwd: str | None = None,
            env: dict | None = None) -> dict:
    """``python -m mnist_lit.cli fit --model MODEL --seed_everything SEED ARGS`` as a user runs it: test accuracy, best
    checkpoint, wall time, command, and the JSON lines its callbacks (``bench.…``) appended to $BENCH_RECORDS."""
    quiet = [] if bar else ["--trainer.enable_progress_bar", "false"]
    args = ["--model", model, "--seed_everything", str(seed), *quiet, *args]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # for callbacks in bench/
    with tempfile.TemporaryDirectory() as tmp:
        Path(cwd or tmp).mkdir(parents=True, exist_ok=True)  # where it runs: a temporary folder unless cwd
        records, start = Path(tmp) / "records.jsonl", time.perf_counter()
        done = run([*CLI, "fit", *args, "--data.data_dir", data_dir], cwd=cwd or tmp,
                   env={**os.environ, "PYTHONPATH": path, "BENCH_RECORDS": str(records), **(env or {})})
        seconds = time.perf_counter() - start
        records = [json.loads(line) for line in records.read_text().splitlines()] if records.exists() else []
    shown = shlex.join(["python", "-m", "mnist_lit.cli", "fit", *args])
    acc = re.search(r"^test accuracy: ([0-9.]+)$", done.stdout, re.MULTILINE)
    best = re.search(r"^best checkpoint: (.+)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or not acc:
        raise SystemExit(f"error: `{shown}` failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return {"acc": float(acc.group(1)), "best": best and best.group(1), "seconds": seconds, "command": shown,
            "records": records}


def trainer_fit(name: str, seed: int, epochs: int, data_dir: str = DATA_DIR, callbacks: tuple = (), test: bool = True,
                precision: str = "32-true", compile_net: bool = False, **model) -> dict:
    """``Trainer.fit`` of the recipe (``model`` overrides its options) with no logger, checkpoint or evaluation."""
    import lightning as L

    from mnist_lit.data.datamodule import MNISTDataModule
    from mnist_lit.models.classifier import MNISTClassifier

    cfg = recipe(name)
    L.seed_everything(seed, verbose=False)
    dm, net = MNISTDataModule(data_dir=data_dir, **cfg["data"]), MNISTClassifier(**{**cfg["model"], **model})
    if compile_net:
        net.net.compile()  # in place: the state_dict keeps its keys; compile time counts as training time
    trainer = L.Trainer(max_epochs=epochs, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, precision=precision,
                        callbacks=list(callbacks))
    start = time.perf_counter()
    trainer.fit(net, datamodule=dm)
    seconds = time.perf_counter() - start
    acc = trainer.test(net, datamodule=dm, verbose=False)[0]["test/acc"] if test else None
    return {"seconds": seconds, "samples": trainer.num_training_batches * cfg["data"]["batch_size"] * epochs,
            "acc": acc}


def plain_loop(name: str, seed: int, epochs: int, steps: int | None = None, bare: bool = False, device: str = "cpu",
               data_dir: str = DATA_DIR, max_seconds: float | None = None, stop_at: float | None = None) -> dict:
    """The recipe's network, optimizer and schedule in a plain PyTorch loop, scored on the test digits. ``bare=False``:
    the tutorials' loop (torchvision's MNIST, per-sample transforms, a DataLoader); ``bare=True``: mnist_lit's tricks
    without Lightning. ``stop_at``: a test after each epoch (``curve``, untimed) and a stop once reached."""
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
        images, labels, test_set = dm.train_set.images, dm.train_set.labels, (dm.test_set.images, dm.test_set.labels)
        per_epoch = len(labels) // batch

        def batches(epoch: int):
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed + epoch))
            for index in order[:per_epoch * batch].split(batch):
                x = normalize(images[index], norm)
                yield (x.contiguous(memory_format=torch.channels_last) if conv else x), labels[index]
    else:
        mean, std = NORMALIZATIONS[norm]
        to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
        loader = DataLoader(datasets.MNIST(data_dir, train=True, transform=to_tensor), batch_size=batch, shuffle=True)
        official = datasets.MNIST(data_dir, train=False)
        test_set, per_epoch, batches = (official.data, official.targets), len(loader), lambda epoch: iter(loader)
    per_epoch = min(per_epoch, steps or per_epoch)
    optimizer, options = ((torch.optim.SGD, {"momentum": hp["momentum"]}) if hp["optimizer"] == "sgd"
                          else (torch.optim.Adam, {"betas": tuple(hp["betas"])}))
    opt = optimizer(net.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"], foreach=bare or None, **options)
    warmup, schedulers = hp["warmup_steps"], torch.optim.lr_scheduler
    schedule = (schedulers.OneCycleLR(opt, max_lr=hp["lr"], total_steps=epochs * per_epoch, pct_start=hp["pct_start"],
                                      cycle_momentum=False)  # as tuomaso/train_mnist_fast: per batch, beta1 fixed
                if hp["scheduler"] == "onecycle"
                else schedulers.LinearLR(opt, 1 / warmup, 1.0, warmup) if warmup else None)

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
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
            if schedule:
                schedule.step()
            samples += len(y)
        sync()
        seconds.append(time.perf_counter() - start)
        if stop_at:
            points.append({"epoch": epoch, "seconds": sum(seconds), "test_acc": test_accuracy()})
        if stop_at and points[-1]["test_acc"] >= stop_at or max_seconds and sum(seconds) > max_seconds:
            break
    return {"epochs": seconds, "seconds": sum(seconds), "samples": samples, "acc": test_accuracy(), "curve": points}


def photo_folder(folder: Path, count: int, data_dir: str) -> tuple[list[Path], np.ndarray]:
    """The first ``count`` test digits photographed (seed 0) as NNNN.png: paths, labels."""
    from tests.digits import photograph, test_digits

    digits, labels = test_digits(Path(data_dir), count)
    rng, paths = np.random.default_rng(0), [folder / f"{i:04d}.png" for i in range(len(digits))]
    folder.mkdir(parents=True, exist_ok=True)
    for digit, path in zip(digits, paths):
        photograph(digit, rng).convert("RGB").save(path)
    return paths, labels


def predict_images(ckpt: str, paths: list[Path], labels: np.ndarray, options: tuple | list = (),
                   cwd: Path | None = None) -> dict:
    """``predict-images --format csv``, launch to exit: wall time, images/s, accuracy (labels by file name)."""
    start = time.perf_counter()
    done = run([*CLI, "predict-images", "--ckpt", ckpt, "--format", "csv", *options, *map(str, paths)], cwd=cwd)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: some file unreadable, a result; anything else stops the benchmark
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
