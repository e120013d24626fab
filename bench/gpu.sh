#!/usr/bin/env bash
# One command for a short GPU slot (issue 24): every recipe's seconds per training epoch through the mnist_lit CLI
# beside the tutorials' own loop on the same GPU, `fast`'s training time to 99 % test accuracy (CUDA events, after an
# untimed warm-up), `best`'s 20 epochs, peak GPU memory, and the GPU, driver and library versions. It writes one
# results file, OUT/GPU_RESULTS.md (rendered from OUT/results.jsonl, which grows one line per measurement), and
# OUT/gpu.log. Run from the repository root, with mnist_lit importable (`pip install --no-deps -e .`) and MNIST's four
# raw files in ./data/MNIST/raw (or $MNIST_LIT_DATA_DIR):
#
#     bash bench/gpu.sh OUT                      # about 6 minutes on an H200
#     DEADLINE=190 bash bench/gpu.sh OUT         # seconds: `best` (last) stops after the epoch that passes it
#     ACCEL=cpu EPOCH_STEPS=5 bash bench/gpu.sh OUT   # tries the script on a CPU: 5 steps an epoch, 2 of best's
#
# It finishes inside DEADLINE (default 480 s) plus a minute: each measurement starts only if the time left can hold
# it, and `best` stops at the end of the epoch that passes the deadline. If it is killed anyway, results.jsonl keeps
# what was measured and `python3 GPU_BENCH_DIR/gpu_bench.py render OUT` (GPU_BENCH_DIR is printed first) writes
# the table again; gpu.sh itself renders it on its way out.
set -u
out=${1:?usage: bash bench/gpu.sh OUT}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 MNIST_LIT_DATA_DIR=${MNIST_LIT_DATA_DIR:-$PWD/data} ACCEL=${ACCEL:-gpu}
export DEADLINE=${DEADLINE:-480} GPU_BENCH_START=$(date +%s) GPU_BENCH_LOG=$out/results.jsonl
export COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
export PYTHONPATH=$work:$PWD${PYTHONPATH:+:$PYTHONPATH}
echo "GPU_BENCH_DIR=$work"

cat >"$work/gpu_timer.py" <<'EOF'
"""bench/gpu.sh's callback: each training epoch's time (host clock and CUDA events, the GPU synchronised at the
epoch's two ends only), the accuracies after it, the peak GPU memory; an optional untimed warm-up before the first
step; a stop at the end of the epoch that passes GPU_BENCH_STOP_AT (a time.time()). One JSON line per epoch."""
import copy
import json
import os
import time

import lightning as L
import torch
import torch.nn.functional as F


def record(**fields):
    with open(os.environ["GPU_BENCH_LOG"], "a") as f:
        f.write(json.dumps(fields) + "\n")
        f.flush()
        os.fsync(f.fileno())


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.run = os.environ.get("GPU_BENCH_RUN", "?")
        self.ended = True

    def _sync(self, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_start(self, trainer, pl_module):
        if os.environ.get("GPU_BENCH_WARMUP") == "1":
            self._warm_up(trainer, pl_module)

    @torch.enable_grad()
    def _warm_up(self, trainer, pl_module):
        """Untimed: three forward and backward passes of a copy of the network on random digits of the run's batch
        size (cuDNN's and cuBLAS's kernels picked and loaded); the run's network, optimizer and random streams are
        untouched."""
        start = time.perf_counter()
        net, device = copy.deepcopy(pl_module.net).train(), pl_module.device
        batch = trainer.datamodule.hparams.batch_size
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for _ in range(3):
                x = torch.randn(batch, 1, 28, 28, device=device)
                F.cross_entropy(net(x), torch.randint(0, 10, (batch,), device=device)).backward()
        del net
        self._sync(pl_module)
        record(run=self.run, kind="warmup", seconds=time.perf_counter() - start)

    def on_train_epoch_start(self, trainer, pl_module):
        self.ended = False
        self._sync(pl_module)
        self.cuda = pl_module.device.type == "cuda"
        if self.cuda:
            self.events = [torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)]
            self.events[0].record()
        self.t0 = time.perf_counter()

    def _end(self, pl_module):
        if self.ended:
            return
        self.ended = True
        if self.cuda:
            self.events[1].record()
        self._sync(pl_module)
        self.wall = time.perf_counter() - self.t0
        self.gpu = self.events[0].elapsed_time(self.events[1]) / 1000 if self.cuda else None

    def on_validation_start(self, trainer, pl_module):  # an epoch's validation ends its training time
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._end(pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        self._end(pl_module)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("val/acc", "test/acc")}
        peak = torch.cuda.max_memory_allocated() / 2**20 if self.cuda else None
        record(run=self.run, kind="epoch", epoch=trainer.current_epoch, steps=trainer.num_training_batches,
               wall=self.wall, gpu=self.gpu, peak_mb=peak, **metrics)
        if time.time() > float(os.environ.get("GPU_BENCH_STOP_AT", "inf")):
            trainer.should_stop = True
            record(run=self.run, kind="stopped", epoch=trainer.current_epoch)

    def on_test_end(self, trainer, pl_module):
        record(run=self.run, kind="test", acc=float(trainer.callback_metrics.get("test/acc", float("nan"))))
EOF

cat >"$work/gpu_bench.py" <<'EOF'
"""bench/gpu.sh's measurements (``run OUT``) and its results file (``render OUT``, from OUT/results.jsonl)."""
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ORDER = ["mlp", "lenet", "lenet5", "cnn3block", "cnn3block5x5", "bncnn", "fast", "best"]
ACCEL = os.environ.get("ACCEL", "gpu")
DATA = os.environ["MNIST_LIT_DATA_DIR"]
STEPS = int(os.environ.get("EPOCH_STEPS", "0"))  # a dry run: steps per epoch
START = float(os.environ["GPU_BENCH_START"])
DEADLINE = START + float(os.environ["DEADLINE"])
ROOT = Path.cwd()
OUT = Path(sys.argv[2])  # read now: the CLI runs rewrite sys.argv


def record(**fields):
    from gpu_timer import record as write
    write(**fields)


def left() -> float:
    return DEADLINE - time.time()


# --------------------------------------------------------------------------------------------------- runs ---

def machine():
    import lightning
    import torch
    import torchvision
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                          "--format=csv,noheader"], capture_output=True, text=True) if ACCEL == "gpu" else None
    record(kind="machine", gpu=smi.stdout.strip() if smi and smi.returncode == 0 else "no nvidia-smi",
           cuda_name=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
           lightning=lightning.__version__, torchvision=torchvision.__version__, python=platform.python_version(),
           cpus=os.cpu_count(), accel=ACCEL, commit=os.environ.get("COMMIT", "unknown"), date=str(date.today()),
           deadline=float(os.environ["DEADLINE"]))


def cli_fit(run: str, recipe: str, *args: str, warmup: bool = False, stop_at: float | None = None) -> None:
    """``python -m mnist_lit.cli fit --model RECIPE ARGS`` in this process (imports and CUDA start-up paid once),
    with gpu_timer.EpochTimer appended to its callbacks, in a folder of its own."""
    import torch
    from mnist_lit.training import cli
    os.environ.update(GPU_BENCH_RUN=run, GPU_BENCH_WARMUP="1" if warmup else "0",
                      GPU_BENCH_STOP_AT=str(stop_at or "inf"))
    dry = ["--trainer.limit_train_batches", str(STEPS), "--trainer.limit_val_batches", "2",
           "--trainer.limit_test_batches", "2"] if STEPS else []
    argv = ["fit", "--model", recipe, "--trainer.accelerator", ACCEL, "--trainer.enable_progress_bar", "false",
            "--data.data_dir", DATA, *args, *dry, "--trainer.callbacks+=gpu_timer.EpochTimer"]
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        start = time.perf_counter()
        try:
            status = cli.main(argv)
        except Exception as err:  # one run's failure is a result; the others still run
            status = f"{type(err).__name__}: {err}"[:300]
        finally:
            os.chdir(here)
        seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    record(run=run, kind="fit", recipe=recipe, status=status, seconds=seconds, peak_mb=peak, args=list(args))


def tutorial(recipe: str) -> None:
    """The tutorials' own loop (bench/common.py's plain_loop with bare=False) on this device: torchvision's MNIST, all
    60,000 training images, per-sample ToTensor and Normalize, DataLoader(batch_size=the recipe's, shuffle=True),
    each batch copied with .to(device); the recipe's network, optimizer and schedule. Ten untimed steps, then one
    whole epoch timed (the device synchronised at its two ends)."""
    import torch
    import torch.nn.functional as F
    import yaml
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms
    from mnist_lit.data.normalization import NORMALIZATIONS
    from mnist_lit.models.nets import build_net

    cfg = yaml.safe_load((ROOT / "configs" / f"{recipe}.yaml").read_text())
    hp = {"optimizer": "adam", "momentum": 0.0, "weight_decay": 0.0, "warmup_steps": 0, "betas": (0.9, 0.999),
          "scheduler": "none", "pct_start": 0.25, **cfg["model"]}
    batch = cfg["data"]["batch_size"]
    device = torch.device("cuda" if ACCEL == "gpu" else "cpu")
    mean, std = NORMALIZATIONS[hp["normalization"]]
    train = datasets.MNIST(DATA, train=True, transform=transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((mean,), (std,))]))
    loader = DataLoader(train, batch_size=batch, shuffle=True)
    torch.manual_seed(0)
    net = build_net(hp["net"]).to(device)
    if hp["optimizer"] == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"])
    else:
        opt = torch.optim.Adam(net.parameters(), lr=hp["lr"], betas=tuple(hp["betas"]), weight_decay=hp["weight_decay"])
    steps = STEPS or len(loader)
    if hp["scheduler"] == "onecycle":
        schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp["lr"], total_steps=steps + 10,
                                                       pct_start=hp["pct_start"], cycle_momentum=False)
    elif hp["warmup_steps"]:
        schedule = torch.optim.lr_scheduler.LinearLR(opt, 1 / hp["warmup_steps"], 1.0, hp["warmup_steps"])
    else:
        schedule = None

    def step(x, y):
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if schedule:
            schedule.step()

    net.train()
    for i, (x, y) in enumerate(loader):  # warm-up, untimed
        if i == 10:
            break
        step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, done = time.perf_counter(), 0
    for x, y in loader:
        if done == steps:
            break
        step(x, y)
        done += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    record(kind="tutorial", recipe=recipe, seconds=time.perf_counter() - start, steps=done, batch=batch,
           images=len(train))


def run() -> None:
    machine()
    render()
    # epochs per recipe through the CLI: the second epoch is the one reported (the first pays the start-up)
    plan = [("fast", lambda: cli_fit("fast", "fast", warmup=True))]
    for recipe in ["cnn3block", "mlp", "lenet", "lenet5", "cnn3block5x5", "bncnn"]:
        plan.append((f"cli {recipe}", lambda r=recipe: cli_fit(r, r, "--trainer.max_epochs", "2")))
    for recipe in ["cnn3block", "mlp", "lenet", "lenet5", "cnn3block5x5", "bncnn", "fast", "best"]:
        plan.append((f"tutorial {recipe}", lambda r=recipe: tutorial(r)))
    # last: the one measurement that degrades gracefully (it stops after the epoch that passes the deadline)
    plan.append(("best", lambda: cli_fit("best", "best", *(["--trainer.max_epochs", "2"] if STEPS else []),
                                         stop_at=DEADLINE - 20)))
    needs = {"best": 60}  # seconds a measurement must have left to start (others: 10)
    for name, measure in plan:
        if left() < needs.get(name, 10):
            record(kind="skipped", what=name, left=left())
            continue
        print(f"== [{time.time() - START:.0f} s] {name}", flush=True)
        try:
            measure()
        except Exception as err:
            record(kind="error", what=name, error=f"{type(err).__name__}: {err}"[:500])
        render()
    record(kind="done", seconds=time.time() - START)
    render()


# ------------------------------------------------------------------------------------------------- table ---

def render() -> None:
    import yaml
    log = Path(os.environ["GPU_BENCH_LOG"])
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    m = next((r for r in rows if r["kind"] == "machine"), {})
    epochs = lambda run: [r for r in rows if r.get("run") == run and r["kind"] == "epoch"]
    fits = {r["run"]: r for r in rows if r["kind"] == "fit"}
    tests = {r["run"]: r["acc"] for r in rows if r["kind"] == "test"}
    tut = {r["recipe"]: r for r in rows if r["kind"] == "tutorial"}
    f2 = lambda v, d=2: "–" if v is None else f"{v:.{d}f}"
    lines = ["# mnist_lit on the GPU: bench/gpu.sh", "",
             f"Date: {m.get('date', '?')}. Machine: {m.get('gpu', '?')} (name, driver, memory, max SM clock); "
             f"{m.get('cpus', '?')} CPUs; torch {m.get('torch', '?')} (CUDA {m.get('cuda')}, cuDNN {m.get('cudnn')}), "
             f"lightning {m.get('lightning', '?')}, torchvision {m.get('torchvision', '?')}, Python "
             f"{m.get('python', '?')}. Commit: {m.get('commit', '?')}. Device: {m.get('accel', '?')}.", "",
             f"Command: `bash bench/gpu.sh OUT` (DEADLINE={m.get('deadline', 0):g} s). Each `mnist_lit` figure is a "
             "run of `python -m mnist_lit.cli fit --model RECIPE --trainer.accelerator gpu` (in one process, one "
             "run after another) with a timing callback; an epoch's time is its training steps', validation "
             "excluded, the GPU synchronised at its two ends only.", "",
             "## Seconds per training epoch: mnist_lit vs. the tutorials' loop, same GPU", "",
             "| recipe | batch | mnist_lit s/epoch (steps) | tutorial loop s/epoch (steps) | ratio | peak GPU MB | "
             "test acc after the run |", "|---|---|---|---|---|---|---|"]
    for recipe in ORDER:
        ep = epochs(recipe)
        steady = ep[1:] or ep  # the first epoch pays the start-up
        ours = statistics.median(e["wall"] for e in steady) if steady else None
        t = tut.get(recipe)
        theirs = t["seconds"] * (-(-t["images"] // t["batch"])) / t["steps"] if t and t["steps"] else None
        ratio = f"{theirs / ours:.1f}×" if ours and theirs else "–"
        fit = fits.get(recipe, {})
        status = fit.get("status")
        acc = tests.get(recipe)
        batch = yaml.safe_load((ROOT / "configs" / f"{recipe}.yaml").read_text())["data"]["batch_size"]
        lines.append(f"| {recipe} | {batch} | {f2(ours)} ({ep[-1]['steps'] if ep else '–'}) | "
                     f"{f2(theirs)} ({t['steps'] if t else '–'}) | {ratio} | {f2(fit.get('peak_mb'), 0)} | "
                     + (f"{100 * acc:.2f} %" if acc is not None else "–")
                     + ("" if status in (0, None) else f" (run failed: {status})") + " |")
    lines += ["", "mnist_lit trains on the 55,000 images of the training split (the last smaller batch dropped); the "
              "tutorials' loop on all 60,000, its epoch extrapolated from the steps timed where it was cut short. "
              "mnist_lit's figure is the median of its epochs after the first (two-epoch runs; `fast`: its two "
              "epochs of ¾ of the split; `best`: its run below). Accuracies after two epochs are not the recipes' "
              "(their runs are longer).", ""]

    lines += ["## `fast`: training time to 99 % test accuracy", ""]
    ep = epochs("fast")
    warm = next((r["seconds"] for r in rows if r.get("run") == "fast" and r["kind"] == "warmup"), None)
    if ep:
        lines += ["| epoch | steps | training s, CUDA events (cumulative) | host clock (cumulative) | test acc |",
                  "|---|---|---|---|---|"]
        gpu = wall = 0.0
        reached = None
        for e in ep:
            gpu = None if e["gpu"] is None else (gpu or 0.0) + e["gpu"]
            wall += e["wall"]
            acc = e.get("test/acc")
            if reached is None and acc is not None and acc >= 0.99:
                reached = (gpu, wall, e["epoch"])
            lines.append(f"| {e['epoch']} | {e['steps']} | {f2(gpu)} | {wall:.2f} | "
                         + (f"{100 * acc:.2f} %" if acc is not None else "–") + " |")
        lines += ["", (f"99 % reached after epoch {reached[2]}: **{f2(reached[0])} s** of training by CUDA events "
                       f"({reached[1]:.2f} s host clock)" if reached else "99 % not reached")
                  + f", after an untimed warm-up of {f2(warm)} s (3 forward/backward passes of a copy of the "
                  "network); the evaluations after each epoch are not counted. Target (issue 24): ≤ 2 s.", ""]
    else:
        lines += ["not measured", ""]

    lines += ["## `best`: its 20 epochs", ""]
    ep = epochs("best")
    if ep:
        stopped = any(r["kind"] == "stopped" and r.get("run") == "best" for r in rows)
        fit = fits.get("best", {})
        train = sum(e["wall"] for e in ep)
        lines += [f"{len(ep)} epoch(s) run{' (stopped at the deadline)' if stopped else ''}: "
                  f"**{train:.1f} s** of training (median {statistics.median(e['wall'] for e in ep):.2f} s an epoch, "
                  f"{ep[-1]['steps']} steps), "
                  + (f"{fit['seconds']:.1f} s for the whole `fit` (start-up, validation after each epoch, checkpoints, "
                     f"the final test); " if fit else "")
                  + (f"test accuracy of the checkpoint picked on val: {100 * tests['best']:.2f} %; "
                     if "best" in tests else "")
                  + f"peak GPU memory {f2(fit.get('peak_mb'), 0)} MB. Target (issue 24): 20 epochs ≤ 2 minutes.", ""]
    else:
        lines += ["not measured", ""]

    other = [r for r in rows if r["kind"] in ("skipped", "error")]
    done = next((r for r in rows if r["kind"] == "done"), None)
    lines += ["## This run", "", f"Finished: {'yes, after %.0f s' % done['seconds'] if done else 'no (cut off)'}."]
    lines += [f"- {r['kind']}: {r['what']}" + (f" ({r['error']})" if "error" in r else f" ({r['left']:.0f} s left)")
              for r in other]
    out = OUT / "GPU_RESULTS.md"
    tmp = out.with_suffix(".part")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)


if __name__ == "__main__":
    {"run": run, "render": render}[sys.argv[1]]()
EOF

cleanup() { $py "$work/gpu_bench.py" render "$out" >/dev/null 2>&1; }
trap cleanup EXIT
# a hard stop a minute past the deadline, in case one measurement overruns; TERM, then KILL 10 s later
timeout -k 10 $((DEADLINE + 60)) $py "$work/gpu_bench.py" run "$out" 2>&1 | tee "$out/gpu.log" | grep -E "^== |Error|error" 
cleanup
cat "$out/GPU_RESULTS.md"
