"""Batch augmentation on the CPU: kornia.augmentation against mnist_lit's hand-written affine_grid/grid_sample, and
what the augmentation costs in an epoch of the ``best`` recipe.

    pip install -e '.[bench]'                                          # kornia, for the comparison only
    flock /tmp/team/cpu.lock python bench/augment_speed.py            # writes bench/AUGMENT.md

One run, side by side, on real MNIST training digits (uint8 in memory, as the data module holds them), batches of
the ``best`` recipe's size, each side alternating with the other so that a change in the machine's load hits both:

1. affine only (rotation, scale, aspect, shear, translation; the ``best`` recipe's ranges): kornia's
   ``RandomAffine`` (per-sample parameters) vs. ``mnist_lit.augment``;
2. elastic only: kornia's ``RandomElasticTransform`` vs. ``mnist_lit.augment`` (coarse random field, bicubic);
3. every family of the ``best`` recipe (``mnist_lit.augment`` only: kornia has no stroke-width family);
4. the cost in training: a ``best`` training step (forward, backward, Adam) per batch, and two real
   ``Trainer.fit`` runs of the ``best`` recipe over the same batches, augmentation off and on.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import kornia
import kornia.augmentation as K
import lightning as L
import torch
import yaml
from jsonargparse import ArgumentParser

from mnist_lit.augment import Affine, Augmentation, Elastic, augment
from mnist_lit.data import MNISTDataModule
from mnist_lit.module import MNISTClassifier

ROOT = Path(__file__).resolve().parent.parent


def best_recipe() -> dict:
    return yaml.safe_load((ROOT / "configs" / "best.yaml").read_text())


def best_augmentation() -> Augmentation:
    """The ``best`` recipe's augmentation, parsed as LightningCLI parses it."""
    parser = ArgumentParser()
    parser.add_argument("--augment", type=Augmentation)
    return parser.instantiate(parser.parse_object({"augment": best_recipe()["data"]["augment"]})).augment


def images_per_second(fn, batches: list[torch.Tensor], repeats: int) -> float:
    fn(batches[0])  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        for batch in batches:
            fn(batch)
    return repeats * sum(len(b) for b in batches) / (time.perf_counter() - start)


def fit_seconds(data_dir: str, augmentation: Augmentation, steps: int, batch_size: int) -> float:
    """Seconds of ``steps`` training steps of the ``best`` recipe (no validation), timed from the first to the last
    batch by Lightning's own loop."""
    recipe = best_recipe()["model"]
    torch.manual_seed(0)
    model = MNISTClassifier(**recipe)
    data = MNISTDataModule(data_dir=data_dir, batch_size=batch_size, normalization="mnist", augment=augmentation)
    times: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_start(self, *args):
            if not times:
                times.append(time.perf_counter())

        def on_train_epoch_end(self, *args):
            times.append(time.perf_counter())

    trainer = L.Trainer(max_epochs=1, limit_train_batches=steps, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", callbacks=[Clock()])
    trainer.fit(model, datamodule=data)
    return times[-1] - times[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--batches", type=int, default=20, help="batches per timing (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="passes over them per timing (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per comparison (default 3)")
    parser.add_argument("--fit-steps", type=int, default=60, help="training steps per Trainer.fit run (default 60)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "AUGMENT.md"))
    opts = parser.parse_args()

    batch_size = best_recipe()["data"]["batch_size"]
    full = best_augmentation()
    data = MNISTDataModule(data_dir=opts.data_dir)
    data.prepare_data()
    data.setup()
    images = data.train_set.images[: opts.batches * batch_size]
    batches = list(images.split(batch_size))
    load = os.getloadavg()

    a = full.affine
    kornia_affine = K.RandomAffine(degrees=a.rotation, translate=(a.translate / 28, a.translate / 28),
                                   scale=(1 - a.scale, 1 + a.scale), shear=(-a.shear, a.shear, 0.0, 0.0), p=1.0)
    affine_only = Augmentation(affine=full.affine)
    # kornia's elastic field: Gaussian-smoothed noise; sigma 4 px on 28×28 bends the strokes about as our 4×4 grid
    kornia_elastic = K.RandomElasticTransform(kernel_size=(15, 15), sigma=(4.0, 4.0), alpha=(1.0, 1.0), p=1.0)
    elastic_only = Augmentation(elastic=Elastic(alpha=full.elastic.alpha, grid=full.elastic.grid))
    generator = torch.Generator().manual_seed(0)

    def as_float(batch: torch.Tensor) -> torch.Tensor:
        return batch.unsqueeze(1).float() / 255

    sides = {
        "affine": {"kornia RandomAffine": lambda b: kornia_affine(as_float(b)),
                   "mnist_lit.augment (affine_grid/grid_sample)": lambda b: augment(b, affine_only, generator)},
        "elastic": {"kornia RandomElasticTransform": lambda b: kornia_elastic(as_float(b)),
                    "mnist_lit.augment (coarse field, grid_sample)": lambda b: augment(b, elastic_only, generator)},
        "all families of `best`": {"mnist_lit.augment": lambda b: augment(b, full, generator)},
    }
    results: dict[str, dict[str, list[float]]] = {k: {name: [] for name in v} for k, v in sides.items()}
    with torch.no_grad():
        for _ in range(opts.rounds):
            for family, fns in sides.items():
                for name, fn in fns.items():
                    results[family][name].append(images_per_second(fn, batches, opts.repeats))
                    print(f"{family} | {name}: {results[family][name][-1]:,.0f} images/s", flush=True)

    # One training step of `best` (as MNISTClassifier runs it: channels_last, foreach Adam), per batch.
    torch.manual_seed(0)
    model = MNISTClassifier(**best_recipe()["model"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    labels = data.train_set.labels[:batch_size]

    def train_step(batch: torch.Tensor) -> None:
        x = (batch.unsqueeze(1).float() / 255 - 0.1307) / 0.3081
        loss = torch.nn.functional.cross_entropy(model(x), labels[: len(batch)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step_rate = images_per_second(train_step, batches, 1)
    print(f"best training step: {step_rate:,.0f} images/s", flush=True)

    fits = {"off": [], "on": []}
    for _ in range(2):  # off, on, off, on
        for side, augmentation in (("off", Augmentation()), ("on", full)):
            fits[side].append(fit_seconds(opts.data_dir, augmentation, opts.fit_steps, batch_size))
            print(f"Trainer.fit, {opts.fit_steps} steps, augmentation {side}: {fits[side][-1]:.2f} s", flush=True)

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    lines = [
        "# Batch augmentation: kornia vs. hand-written, and its cost in a `best` epoch (CPU)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"(torch threads: {torch.get_num_threads()}), kornia {kornia.__version__}, Python {platform.python_version()}. "
        f"Load average at start: {load[0]:.2f}.",
        "",
        f"Produced by: `{' '.join(['flock /tmp/team/cpu.lock python bench/augment_speed.py', *sys.argv[1:]])}`",
        "",
        f"Real MNIST training digits (uint8), {opts.batches} batches of {batch_size} (the `best` recipe's batch), "
        f"{opts.repeats} passes per timing, {opts.rounds} rounds with the sides alternating; the median of the rounds. "
        "Parameters: the `best` recipe's ranges (configs/best.yaml). Every side draws its parameters per image.",
        "",
        "| family | implementation | images/s (median) | rounds | ratio to the first |",
        "|---|---|---|---|---|",
    ]
    for family, by_name in results.items():
        first = median(next(iter(by_name.values())))
        for name, rates in by_name.items():
            lines.append(f"| {family} | {name} | {median(rates):,.0f} | "
                         f"{', '.join(f'{r:,.0f}' for r in rates)} | {median(rates) / first:.2f} |")
    aug_rate = median(results["all families of `best`"]["mnist_lit.augment"])
    off, on = median(fits["off"]), median(fits["on"])
    lines += [
        "",
        "## Cost in a `best` epoch",
        "",
        f"- a `best` training step (forward, backward, Adam; channels_last): {step_rate:,.0f} images/s, so "
        f"augmenting a batch takes {100 * step_rate / aug_rate:.1f} % of the time of training on it;",
        f"- `Trainer.fit` of the `best` recipe, {opts.fit_steps} steps of {batch_size} (no validation), "
        f"augmentation off: {off:.2f} s, on: {on:.2f} s (runs: off {', '.join(f'{s:.2f}' for s in fits['off'])}; "
        f"on {', '.join(f'{s:.2f}' for s in fits['on'])}): augmentation adds **{100 * (on - off) / off:.1f} %** "
        f"to the training time (target ≤ 15 %).",
    ]
    Path(opts.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
