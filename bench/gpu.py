"""For a short GPU slot (issue 24): each recipe's epoch through the CLI beside the tutorials' loop, `fast`'s time to
99 %, `best`'s 20 epochs; OUT/GPU_RESULTS.md is rewritten after every measurement and epoch, kept if cut off.
``--options``: instead, the GPU's speed options (bf16 autocast, fused optimizer, channels_last, torch.compile's modes,
larger evaluation batches) against the defaults, side by side, for cnn3block, fast and best: OUT/GPU_OPTIONS.md.

    python -m bench.gpu --out OUT                                   # about 6 minutes on an H200
    python -m bench.gpu --out OUT --options                         # about 2.5 minutes (--deadline 150)
    python -m bench.gpu --out /tmp/g --accel cpu --epoch-steps 5    # tries it on a CPU: 5 steps an epoch
"""

import copy
import gc
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import torchvision

from bench.common import arguments, commit, option, plain_loop, recipe, table

ORDER = ["mlp", "lenet", "lenet5", "cnn3block", "cnn3block5x5", "bncnn", "fast", "best"]
TUTORIAL_STEPS = 200  # the tutorials' loop: an untimed epoch of this many steps, then a timed one
# --options: the recipes, with what shortens them to two short epochs (fast: its own 160 steps each; best: its EMA
# from step 1, not 200, so that the average validated and tested is of trained weights) ...
OPTION_RECIPES = {"cnn3block": ["--trainer.limit_train_batches", "200"], "fast": [],
                  "best": ["--trainer.limit_train_batches", "100", "--trainer.callbacks.update_starting_at_step", "1"]}
# ... and the options, each against "default" (the recipe as it is)
VARIANTS = {
    "default": [],
    "bf16": ["--trainer.precision", "bf16-mixed"],
    "fused": ["--model.fused", "true"],
    "cudnn-benchmark": ["--trainer.benchmark", "true"],
    "eval10000": ["--data.eval_batch_size", "10000"],
    "no-channels_last": ["--model.channels_last", "false"],
    "compile": ["--model.compile", "default"],
    "cudagraphs": ["--model.compile", "reduce-overhead"],
    "autotune": ["--model.compile", "max-autotune-no-cudagraphs"],
    "all": ["--trainer.precision", "bf16-mixed", "--model.fused", "true", "--model.compile", "reduce-overhead",
            "--trainer.benchmark", "true", "--data.eval_batch_size", "10000"],
}
# the order they run in, the most telling first, so that a cut-off run has those
OPTION_PLAN = [*(("cnn3block", v) for v in ("default", "bf16", "fused", "cudnn-benchmark", "cudagraphs")),
               *((r, v) for r in ("fast", "best") for v in ("default", "bf16", "fused", "cudnn-benchmark")),
               ("cnn3block", "eval10000"), ("best", "eval10000"), ("cnn3block", "no-channels_last"),
               ("cnn3block", "compile"), ("cnn3block", "all"), ("cnn3block", "tutorial"), ("best", "cudagraphs"),
               ("fast", "cudagraphs"), ("best", "compile"), ("best", "all"), ("fast", "all"), ("fast", "eval10000"),
               ("cnn3block", "autotune"), ("fast", "compile")]
RECORDS: list[dict] = []
OPTIONS = None  # main()'s arguments


def record(**fields) -> None:
    RECORDS.append(fields)
    (render_options if OPTIONS.options else render)()


class EpochTimer(L.Callback):
    """Each training epoch's time (host clock, CUDA events) and accuracies, each validation pass's time (host clock,
    the GPU synchronised at its two ends); ``warmup``: 3 untimed passes of a copy."""

    def __init__(self, run: str, warmup: bool = False, stop_at: float | None = None) -> None:
        self.run, self.warmup, self.stop_at, self.ended = run, warmup, stop_at, True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.device = trainer.strategy.root_device
        self.cuda = self.device.type == "cuda"
        self.sync = (lambda: torch.cuda.synchronize(self.device)) if self.cuda else (lambda: None)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        start = time.perf_counter()
        if self.warmup:
            net, batch = copy.deepcopy(pl_module.net).train(), trainer.datamodule.hparams.batch_size
            with torch.random.fork_rng(devices=[self.device] if self.cuda else []), torch.enable_grad():
                for _ in range(3):
                    x, y = torch.randn(batch, 1, 28, 28, device=self.device), torch.randint(0, 10, (batch,))
                    F.cross_entropy(net(x), y.to(self.device)).backward()
            self.sync()
            record(run=self.run, kind="warmup", seconds=time.perf_counter() - start)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.sync()
        self.events = [torch.cuda.Event(enable_timing=True) for _ in range(2)] if self.cuda else []
        if self.events:
            self.events[0].record()
        self.ended, self.t0 = False, time.perf_counter()

    def _end(self) -> None:
        if not self.ended:
            if self.events:
                self.events[1].record()
            self.sync()
            self.ended, self.wall = True, time.perf_counter() - self.t0
            self.gpu = self.events[0].elapsed_time(self.events[1]) / 1000 if self.events else None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":  # an epoch's validation ends its training
            self._end()
        self.sync()
        self.eval_t0 = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.sync()
        record(run=self.run, kind="eval", sanity=trainer.sanity_checking, seconds=time.perf_counter() - self.eval_t0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end()
        accs = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("val/acc", "test/acc")}
        record(run=self.run, kind="epoch", epoch=trainer.current_epoch, steps=trainer.num_training_batches,
               wall=self.wall, gpu=self.gpu, **accs)
        if self.stop_at and time.time() > self.stop_at:
            trainer.should_stop = True
            record(run=self.run, kind="stopped")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record(run=self.run, kind="test", acc=float(trainer.callback_metrics.get("test/acc", math.nan)))


def cli_fit(run: str, *args: str, warmup: bool = False, stop_at: float | None = None, label: str = "") -> None:
    """``fit --model RUN ARGS`` in this process (start-up paid once), EpochTimer appended, in a folder of its own;
    its records under ``label`` (default: RUN)."""
    from mnist_lit.training import cli

    steps, label = OPTIONS.epoch_steps, label or run
    dry = [f"--trainer.limit_{split}_batches={n}" for split, n in (("train", steps), ("val", 2), ("test", 2))]
    argv = ["fit", "--model", run, "--trainer.accelerator", OPTIONS.accel, "--trainer.enable_progress_bar", "false",
            "--data.data_dir", OPTIONS.data_dir, *args, *(dry if steps else []),
            "--trainer.callbacks+=bench.gpu.EpochTimer", "--trainer.callbacks.run", label,
            "--trainer.callbacks.warmup", str(warmup).lower(),
            *(["--trainer.callbacks.stop_at", str(stop_at)] if stop_at else [])]
    gc.collect()
    torch.compiler.reset()  # a compiled run compiles afresh, as in a process of its own
    torch.backends.cudnn.benchmark = False  # torch's default, which a run with --trainer.benchmark true leaves set
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    here, start = os.getcwd(), time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            status = cli.main(argv)
        except Exception as err:  # noqa: BLE001 - one run's failure is a result; the others still run
            status = f"{type(err).__name__}: {err}"[:300]
        finally:
            os.chdir(here)
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    record(run=label, kind="fit", status=status, seconds=time.perf_counter() - start, peak_mb=peak)


def tutorial(name: str) -> None:
    """The tutorials' loop (plain_loop) on this device: an untimed epoch of TUTORIAL_STEPS steps, then a timed one."""
    steps = OPTIONS.epoch_steps or TUTORIAL_STEPS
    result = plain_loop(name, 0, 2, steps=steps, data_dir=OPTIONS.data_dir,
                        device="cuda" if OPTIONS.accel == "gpu" else "cpu")
    per_epoch = math.ceil(60000 / recipe(name)["data"]["batch_size"])
    record(kind="tutorial", recipe=name, seconds=result["epochs"][1], steps=min(steps, per_epoch), per_epoch=per_epoch)


def machine() -> None:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                          "--format=csv,noheader"], capture_output=True, text=True, check=False) \
        if OPTIONS.accel == "gpu" else None
    record(kind="machine", gpu=smi.stdout.strip() if smi and smi.returncode == 0 else "no nvidia-smi",
           torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
           lightning=L.__version__, torchvision=torchvision.__version__, python=platform.python_version(),
           cpus=os.cpu_count(), commit=os.environ.get("COMMIT") or commit(), date=time.strftime("%Y-%m-%d"))


def run() -> None:
    machine()
    two = ["--trainer.max_epochs", "2"]
    plan = [("fast", lambda: cli_fit("fast", warmup=True)), ("cli cnn3block", lambda: cli_fit("cnn3block", *two)),
            ("tutorial cnn3block", lambda: tutorial("cnn3block")),
            ("best", lambda: cli_fit("best", *(two if OPTIONS.epoch_steps else []),
                                     stop_at=OPTIONS.start + OPTIONS.deadline - 20))]
    for name in ["mlp", "lenet", "lenet5", "cnn3block5x5", "bncnn"]:
        plan += [(f"cli {name}", lambda r=name: cli_fit(r, *two)), (f"tutorial {name}", lambda r=name: tutorial(r))]
    plan += [(f"tutorial {name}", lambda r=name: tutorial(r)) for name in ("fast", "best")]
    for name, measure in plan:
        if (left := OPTIONS.start + OPTIONS.deadline - time.time()) < (60 if name == "best" else 10):
            record(kind="skipped", what=name, left=left)
            continue
        print(f"== [{time.time() - OPTIONS.start:.0f} s] {name}", flush=True)
        try:
            measure()
        except Exception as err:  # noqa: BLE001 - a measurement that fails is reported; the others still run
            record(kind="error", what=name, error=f"{type(err).__name__}: {err}"[:500])
    record(kind="done", seconds=time.time() - OPTIONS.start)


def full_epoch(name: str) -> int:
    """A training epoch's steps in the recipe: its batches of the 55,000 training images (the last, smaller one
    dropped), times its limit_train_batches if that is a fraction (as Lightning counts)."""
    cfg = recipe(name)
    limit, steps = cfg.get("trainer", {}).get("limit_train_batches", 1.0), 55000 // cfg["data"]["batch_size"]
    return int(steps * limit) if isinstance(limit, float) else min(steps, limit)


def run_options() -> None:
    """OPTION_PLAN, as far as the deadline allows: each option a two-epoch fit of the recipe (its first epoch and
    evaluation pay the compiling and warming up, its second is timed), and the tutorials' loop for cnn3block."""
    machine()
    plan = [(r, v) for r, v in OPTION_PLAN if r in OPTIONS.recipes and v in (*OPTIONS.variants, "default", "tutorial")]
    end = OPTIONS.start + OPTIONS.deadline
    for name, variant in plan:
        needs = 30 if "--model.compile" in VARIANTS.get(variant, []) else 8
        if (left := end - time.time()) < needs:
            record(kind="skipped", what=f"{name} {variant}", left=left)
            continue
        print(f"== [{time.time() - OPTIONS.start:.0f} s] {name} {variant}", flush=True)
        try:
            if variant == "tutorial":
                tutorial(name)
                continue
            cli_fit(name, "--trainer.max_epochs", "2", *OPTION_RECIPES[name], *VARIANTS[variant], stop_at=end,
                    label=f"{name} {variant}")
        except Exception as err:  # noqa: BLE001 - a measurement that fails is reported; the others still run
            record(kind="error", what=f"{name} {variant}", error=f"{type(err).__name__}: {err}"[:500])
    record(kind="done", seconds=time.time() - OPTIONS.start)


def render_options() -> None:
    rows, f2 = RECORDS, lambda v, d=2: "–" if v is None else f"{v:.{d}f}"
    m = next((r for r in rows if r["kind"] == "machine"), {})
    of = lambda run, kind: [r for r in rows if r.get("run") == run and r["kind"] == kind]
    tut = {r["recipe"]: r for r in rows if r["kind"] == "tutorial"}
    shown = " ".join(["python -m bench.gpu --options", f"--deadline {OPTIONS.deadline:g}", f"--accel {OPTIONS.accel}",
                      *([f"--epoch-steps {OPTIONS.epoch_steps}"] if OPTIONS.epoch_steps else []),
                      *([f"--recipes {' '.join(OPTIONS.recipes)}"] if OPTIONS.recipes != list(OPTION_RECIPES) else []),
                      *([f"--variants {' '.join(OPTIONS.variants)}"] if OPTIONS.variants != list(VARIANTS) else [])])
    lines = ["# mnist_lit on the GPU: the speed options, python -m bench.gpu --options", "",
             (f"Date: {m.get('date')}. Machine: {m.get('gpu')} (name, driver, memory, max SM clock); {m.get('cpus')} "
              f"CPUs; torch {m.get('torch')} (CUDA {m.get('cuda')}, cuDNN {m.get('cudnn')}), lightning "
              f"{m.get('lightning')}, Python {m.get('python')}. Commit: {m.get('commit')}."), "",
             f"Command: `{shown}`. Each row: `python -m mnist_lit.cli fit --model RECIPE --trainer.accelerator "
             f"{OPTIONS.accel} --trainer.max_epochs 2 OPTIONS` (cnn3block: `--trainer.limit_train_batches 200`; best: "
             "`--trainer.limit_train_batches 100 --trainer.callbacks.update_starting_at_step 1`, its EMA from the "
             "first step; fast: its own 160 steps an epoch), in this one process, one run after another, "
             "torch.compile's caches in memory reset before each, cuDNN's autotuner off unless asked. One run per "
             "row: a row against `default` is a ratio of two runs of one process minutes apart, and `eval10000` "
             "times the same training as `default` (their difference is noise).",
             "", *table("recipe", "option", "ms/step (CUDA events)", "s/epoch (steps)", "speed-up", "one-off s",
                        "eval s/pass", "fit s", "peak MB", "val acc", "test acc")]
    defaults = {}  # recipe: default's s/epoch
    for name in OPTION_RECIPES:
        base = None
        for variant in VARIANTS:
            run = f"{name} {variant}"
            ep, ev, fit = of(run, "epoch"), of(run, "eval"), next(iter(of(run, "fit")), None)
            if not (ep or fit):
                continue
            last, first = ep[-1] if ep else None, ep[0] if ep else None
            timed = last if len(ep) > 1 else None  # the second epoch; a lone first one paid the compiling
            step = (timed["gpu"] if timed["gpu"] is not None else timed["wall"]) / timed["steps"] if timed else None
            epoch = step * full_epoch(name) if step else None
            if variant == "default":
                base = defaults[name] = epoch
            full = [e for e in ev if not e["sanity"]]
            sanity = sum(e["seconds"] for e in ev if e["sanity"])
            one_off = (first["wall"] - timed["wall"] + sanity + (full[0]["seconds"] - full[-1]["seconds"]
                                                                  if len(full) > 1 else 0.0)) if timed else None
            test = next(iter(of(run, "test")), None)
            val_acc = f"{100 * last['val/acc']:.2f} %" if last and "val/acc" in last else "–"
            test_acc = f"{100 * test['acc']:.2f} %" if test else "–"
            failed = "" if fit is None or fit["status"] == 0 else f" (failed: {fit['status']})"
            lines.append(
                f"| {name} | {variant}{failed} | {f2(step and 1000 * step)} | {f2(epoch)} ({full_epoch(name)}) | "
                f"{f'{base / epoch:.2f}×' if base and epoch else '–'} | {f2(one_off, 1)} | "
                f"{f2(full[-1]['seconds'] if full else None, 3)} | {f2(fit and fit['seconds'], 1)} | "
                f"{f2(fit and fit['peak_mb'], 0)} | {val_acc} | {test_acc} |")
    lines += ["", "ms/step: the second epoch's training steps (CUDA events from its start to its end; host clock on a "
              "CPU) over their number; s/epoch: that times the recipe's steps per epoch (in brackets); speed-up: "
              "`default`'s s/epoch over the row's. one-off s: what the first epoch and evaluations cost beyond the "
              "second's, i.e. compiling, CUDA-graph recording, cuDNN's first calls (the first epoch's training time "
              "minus the second's, plus the sanity check, plus the first validation pass minus the last). eval s/pass: "
              "the last validation pass, every validation dataloader of the recipe (the 5,000 validation and 10,000 "
              "test images; with outlier exposure, its validation outliers and augmented validation digits too) at "
              "`--data.eval_batch_size` (1,000, or 10,000 for `eval10000` and `all`). fit s: the whole `fit`, start "
              "to end, its final test included. Accuracies after the two short epochs (val: the second epoch's; test: "
              "the checkpoint the fit tested), one seed: a speed-up that costs accuracy shows as a drop well beyond "
              "the others' spread."]
    for name, t in tut.items():
        theirs, base = t["seconds"] * t["per_epoch"] / t["steps"], defaults.get(name)
        lines += ["", f"The tutorials' loop for {name} on this device (`plain_loop`, {t['steps']} steps timed after "
                  f"as many untimed, extrapolated to its {t['per_epoch']} steps an epoch): **{theirs:.2f} s/epoch**"
                  + (f"; a row's ratio to it is this over its s/epoch (default: {theirs / base:.1f}×; issue 24's "
                     "target for cnn3block: 5×)." if base else ".")]
    done = next((r for r in rows if r["kind"] == "done"), None)
    lines += ["", "Finished: " + (f"after {done['seconds']:.0f} s." if done else "not (yet, or cut off).")]
    lines += [f"- {r['kind']}: {r['what']} ({r.get('error') or format(r['left'], '.0f') + ' s left'})"
              for r in rows if r["kind"] in ("skipped", "error")]
    out = Path(OPTIONS.out) / "GPU_OPTIONS.md"
    out.with_suffix(".part").write_text("\n".join(lines) + "\n")
    out.with_suffix(".part").replace(out)


def render() -> None:
    rows = RECORDS
    m = next((r for r in rows if r["kind"] == "machine"), {})
    epochs = lambda run: [r for r in rows if r.get("run") == run and r["kind"] == "epoch"]
    of = lambda kind, key: {r[key]: r for r in rows if r["kind"] == kind}
    fits, tests, tut = of("fit", "run"), of("test", "run"), of("tutorial", "recipe")
    f2, pct = lambda v, d=2: "–" if v is None else f"{v:.{d}f}", lambda r: f"{100 * r['acc']:.2f} %" if r else "–"
    lines = ["# mnist_lit on the GPU: python -m bench.gpu", "",
             (f"Date: {m.get('date')}. Machine: {m.get('gpu')} (name, driver, memory, max SM clock); {m.get('cpus')} "
             f"CPUs; torch {m.get('torch')} (CUDA {m.get('cuda')}, cuDNN {m.get('cudnn')}), lightning "
             f"{m.get('lightning')}, torchvision {m.get('torchvision')}, Python {m.get('python')}. Commit: "
             f"{m.get('commit')}."), "",
             f"Command: `python -m bench.gpu --deadline {OPTIONS.deadline:g} --accel {OPTIONS.accel}"
             + (f" --epoch-steps {OPTIONS.epoch_steps}`" if OPTIONS.epoch_steps else "`")
             + ". Each `mnist_lit` figure is a run of `python -m mnist_lit.cli fit --model RECIPE --trainer.accelerator"
             " gpu` (in one process, one run after another) with a timing callback; an epoch's time is its training "
             "steps', validation excluded, the GPU synchronised at its two ends only.", "",
             "## Seconds per training epoch: mnist_lit vs. the tutorials' loop, same GPU", "",
             *table("recipe", "mnist_lit s/epoch (steps)", "tutorial loop s/epoch (steps timed)", "ratio",
                    "peak GPU MB", "test acc after the run")]
    for name in ORDER:
        ep, t, fit = epochs(name), tut.get(name), fits.get(name, {})
        ours = statistics.median(e["wall"] for e in ep[1:] or ep) if ep else None  # the 1st pays the start-up
        theirs = t["seconds"] * t["per_epoch"] / t["steps"] if t else None
        failed = "" if fit.get("status") in (0, None) else f" (run failed: {fit['status']})"
        lines.append(f"| {name} | {f2(ours)} ({ep[-1]['steps'] if ep else '–'}) | {f2(theirs)} "
                     f"({t['steps'] if t else '–'}) | {f'{theirs / ours:.1f}×' if ours and theirs else '–'} | "
                     f"{f2(fit.get('peak_mb'), 0)} | {pct(tests.get(name))}{failed} |")
    lines += ["", ("mnist_lit trains on the 55,000 images of the training split (the last smaller batch dropped), "
              "its figure the median of its epochs after the first (two-epoch runs; `fast`, `best`: their own "
              "epochs); the tutorials' loop on all 60,000, its epoch extrapolated from the steps timed after an "
              "untimed epoch of as many. Accuracies after two epochs are not the recipes'."), "",
              "## `fast`: training time to 99 % test accuracy", ""]
    gpu, wall, reached = 0.0, 0.0, None
    for e in epochs("fast"):
        gpu, wall = None if e["gpu"] is None else (gpu or 0.0) + e["gpu"], wall + e["wall"]
        if reached is None and e.get("test/acc", 0) >= 0.99:
            reached = (gpu, wall, e["epoch"], e["test/acc"])
    warm = next((r["seconds"] for r in rows if r.get("run") == "fast" and r["kind"] == "warmup"), None)
    lines += [(f"99 % ({100 * reached[3]:.2f} %) after epoch {reached[2]}: **{f2(reached[0])} s** of training by "
               f"CUDA events ({reached[1]:.2f} s host clock)" if reached else "99 % not reached")
              + f", after an untimed warm-up of {f2(warm)} s (3 passes of a copy of the network); evaluations not "
              "counted. Target (issue 24): ≤ 2 s.", "", "## `best`: its 20 epochs", ""]
    ep, fit = epochs("best"), fits.get("best", {})
    if ep:
        stopped = any(r["kind"] == "stopped" and r.get("run") == "best" for r in rows)
        median = statistics.median(e["wall"] for e in ep)
        lines += [f"{len(ep)} epoch(s){' (stopped at the deadline)' if stopped else ''}: "
                  f"**{sum(e['wall'] for e in ep):.1f} s** of training (median {median:.2f} s an epoch of "
                  f"{ep[-1]['steps']} steps; 20 epochs at that pace: {20 * median:.0f} s)"
                  + (f", {fit['seconds']:.1f} s for the whole `fit`" if fit else "")
                  + f"; test accuracy of the checkpoint picked on val: {pct(tests.get('best'))}; peak GPU memory "
                  f"{f2(fit.get('peak_mb'), 0)} MB. Target (issue 24): 20 epochs ≤ 2 minutes.", ""]
    done = next((r for r in rows if r["kind"] == "done"), None)
    lines += ["Finished: " + (f"after {done['seconds']:.0f} s." if done else "not (yet, or cut off).")]
    lines += [f"- {r['kind']}: {r['what']} ({r.get('error') or format(r['left'], '.0f') + ' s left'})"
              for r in rows if r["kind"] in ("skipped", "error")]
    out = Path(OPTIONS.out) / "GPU_RESULTS.md"
    out.with_suffix(".part").write_text("\n".join(lines) + "\n")
    out.with_suffix(".part").replace(out)


def main() -> None:
    global OPTIONS
    OPTIONS = arguments(__doc__, option("--out", required=True, help="the folder the results file is written to"),
                        option("--deadline", type=float, help="seconds (default 480; with --options 150)"),
                        option("--accel", choices=["gpu", "cpu"], default="gpu"),
                        option("--epoch-steps", type=int, default=0, help="a dry run: steps per epoch"),
                        option("--options", action="store_true", help="the speed options: GPU_OPTIONS.md"),
                        option("--recipes", nargs="+", choices=list(OPTION_RECIPES), default=list(OPTION_RECIPES),
                               help="with --options: these recipes only"),
                        option("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                               help="with --options: these options only (and default)"))
    OPTIONS.start, OPTIONS.out = time.time(), str(Path(OPTIONS.out).resolve())
    OPTIONS.deadline = OPTIONS.deadline or (150 if OPTIONS.options else 480)
    Path(OPTIONS.out).mkdir(parents=True, exist_ok=True)
    (run_options if OPTIONS.options else run)()
    print((Path(OPTIONS.out) / ("GPU_OPTIONS.md" if OPTIONS.options else "GPU_RESULTS.md")).read_text())


if __name__ == "__main__":  # as bench.gpu, the module the CLI imports EpochTimer from: one RECORDS
    sys.modules.setdefault("bench.gpu", sys.modules["__main__"])
    main()
