"""Not a digit: how many non-digits each recipe rejects, and how many digits it still reads, at its own threshold.

    python -m bench.reject --ckpt best=PATH --ckpt best=PATH2 --ckpt fast=PATH ...   # REJECT.md, reject_curve.png
    python -m bench.reject --count 100 --ckpt fast=PATH --out /tmp/smoke              # a smoke run

Images are read as ``predict-images`` reads them (``load_mnist``, preprocessed): the non-digits in bench/nondigits/
(bench/nondigits.py made them; never used to train or tune) and the handwriting-shift families of bench/shift.py (the
same digits as SHIFT.md at the same --count); the 10,000 MNIST test digits as they are. A checkpoint's threshold is
its own rule (``checkpoint["rejection"]``); a checkpoint without one is shown at the max-softmax threshold that
rejects 1 % of the MNIST test digits (a baseline, chosen on test). Several checkpoints of a recipe (seeds): mean ± sd.
"""

import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from bench.common import ROOT, arguments, header, mean_sd, option, table, write
from bench.shift import FAMILIES
from mnist_lit.data.preprocess import BlankImageError, load_mnist
from mnist_lit.inference.predictor import Predictor
from mnist_lit.models.checkpoint import CheckpointError, read_checkpoint
from mnist_lit.models.rejection import Rejection, recorded_rejection
from tests.digits import test_digits

NONDIGITS = ROOT / "bench" / "nondigits"
BASELINE = 0.01  # a checkpoint without a rule: the threshold that rejects this fraction of MNIST test digits
TARGETS = {  # issue 22's acceptance; best's accuracy: within today's seed spread, 99.65 ± 0.08 % (bench/BEST.md)
    "best": {"nondigits": 0.90, "mnist_rejected": 0.005, "shift_accepted": 0.98, "accuracy": 0.9957},
    "fast": {"nondigits": 0.80, "mnist_rejected": 0.01, "accuracy": 0.99},
}
SHOWN = 20  # non-digits still read as digits, listed per checkpoint
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]


def read(paths: list[Path]) -> tuple[torch.Tensor, np.ndarray]:
    """Each file as predict-images reads it, and which were blank ("no ink found": no digit named, so rejected)."""
    images, blank = [], []
    for path in paths:
        try:
            images.append(load_mnist(path))
            blank.append(False)
        except BlankImageError:
            images.append(torch.zeros(28, 28, dtype=torch.uint8))
            blank.append(True)
    return torch.stack(images), np.array(blank)


def shift_sets(data_dir: str, count: int, folder: Path) -> dict[str, tuple[torch.Tensor, np.ndarray, np.ndarray]]:
    """bench/shift.py's families (its seeds: the same digits as SHIFT.md), drawn, saved as PNG and read back."""
    digits, labels = test_digits(Path(data_dir), count)
    sets = {}
    for k, (family, draw) in enumerate(FAMILIES.items()):
        rng, paths = np.random.default_rng([0, k]), [folder / f"{family}-{i:04d}.png" for i in range(count)]
        for digit, path in zip(digits, paths):
            draw(digit, rng).convert("RGB").save(path)
        sets[family] = (*read(paths), labels)
    return sets


def scored(predictor: Predictor, images: torch.Tensor, blank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores (a blank image: −1, below every threshold) and the digits named, 1,000 images at a time."""
    probs = torch.cat([predictor.probabilities(part) for part in images.split(1000)]).float()
    return np.where(blank, -1.0, Rejection.scores(probs).numpy()), probs.argmax(1).numpy()


def measure(path: str, sets: dict, nondigit_names: list[str]) -> dict:
    """One checkpoint: its threshold, what it rejects and accepts there, and its trade-off curve."""
    predictor, rule = Predictor.from_checkpoint(path), recorded_rejection(read_checkpoint(path))
    out = {name: scored(predictor, images, blank) for name, (images, blank, _) in sets.items()}
    mnist, nondigits = out["mnist"][0], out["nondigits"][0]
    threshold = rule.threshold if rule else float(np.quantile(mnist, BASELINE))
    row = {"threshold": threshold, "rule": rule is not None, "nondigits": np.mean(nondigits < threshold)}
    parts = [name.split("-") for name in nondigit_names]  # NNN-kind-shape-style
    for group in dict.fromkeys([p[1] for p in parts] + [p[-1] for p in parts]):
        row[f"nondigits {group}"] = np.mean([s < threshold for s, p in zip(nondigits, parts) if group in (p[1], p[-1])])
    row["read as digits"] = [f"{n} ({d})" for n, s, d in zip(nondigit_names, nondigits, out["nondigits"][1])
                             if s >= threshold]
    for name in ["mnist", *FAMILIES]:
        accepted, right = out[name][0] >= threshold, out[name][1] == sets[name][2]
        row[f"{name} accepted"], row[f"{name} accuracy"] = accepted.mean(), right.mean()
        row[f"{name} accuracy accepted"] = right[accepted].mean() if accepted.any() else float("nan")
    row["mnist rejected"], shift = 1 - row["mnist accepted"], np.concatenate([out[f][0] for f in FAMILIES])
    row |= {f"where {q}": np.mean(nondigits < np.quantile(mnist, q)) for q in (0.005, 0.01)}  # thresholds from test
    share = lambda scores, t: np.searchsorted(np.sort(scores), t) / len(scores)  # the fraction below t
    grid = np.unique(np.concatenate([mnist, shift, nondigits]))
    row["curve"] = [share(s, grid) for s in (mnist, shift, nondigits)]
    row["chosen"] = [float(share(s, threshold)) for s in (mnist, shift, nondigits)]
    return row


def draw_curves(rows: list[dict], path: Path) -> None:
    """Non-digits rejected against digits rejected (log scale), a colour per checkpoint; dots: the chosen points."""
    left, top, right, bottom = 90, 50, 960, 500
    image = Image.new("RGB", (1000, bottom + 70 + 18 * len(rows)), "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default(14)
    x = lambda f: left + (right - left) * (1 - np.log10(np.clip(f, 1e-4, 1)) / np.log10(1e-4))
    y = lambda f: bottom - (bottom - top) * f
    for tick in (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1):
        draw.line((x(tick), top, x(tick), bottom), fill=(190, 190, 190) if tick in (0.005, 0.01) else (235, 235, 235))
        draw.text((x(tick), bottom + 6), f"{100 * tick:g} %", fill="black", font=font, anchor="mt")
    for tick in np.arange(11) / 10:
        draw.line((left, y(tick), right, y(tick)), fill=(190, 190, 190) if tick in (0.8, 0.9) else (235, 235, 235))
        draw.text((left - 6, y(tick)), f"{100 * tick:.0f} %", fill="black", font=font, anchor="rm")
    draw.rectangle((left, top, right, bottom), outline="black")
    draw.text(((left + right) / 2, bottom + 28), "digits rejected, log scale (dark: MNIST test; pale: the "
              "handwriting-shift families together; left edge: 0.01 % or none)", fill="black", font=font, anchor="mt")
    draw.text((left, top - 12), "non-digits rejected (bench/nondigits); filled dot and ring: each checkpoint's "
              "threshold", fill="black", font=font, anchor="lb")
    for k, row in enumerate(rows):
        colour, (mnist, shift, nondigits), r = COLOURS[k % len(COLOURS)], row["curve"], 6
        draw.line(list(zip(x(mnist), y(nondigits))), fill=colour, width=2)
        pale = tuple((c + 2 * 255) // 3 for c in colour)
        draw.line(list(zip(x(shift), y(nondigits))), fill=pale, width=2)
        (cm, cs, cn) = row["chosen"]
        draw.ellipse((x(cm) - r, y(cn) - r, x(cm) + r, y(cn) + r), fill=colour, outline="black")
        draw.ellipse((x(cs) - r, y(cn) - r, x(cs) + r, y(cn) + r), fill="white", outline=colour, width=3)
        draw.text((left, bottom + 52 + 18 * k), f"{row['name']}: {row['path']}" + (
            "" if row["rule"] else " (no rule: the threshold rejecting 1 % of MNIST test)"), fill=colour, font=font)
    image.save(path)


def recipe_table(name: str, group: list[dict]) -> list[str]:
    """A recipe's figures (mean ± sd over its checkpoints) beside its targets, met or missed (judged on the mean)."""
    goal, rules = TARGETS.get(name, {}), ", ".join(
        f"{r['threshold']:.4f}" + ("" if r["rule"] else " (no rule: 1 % of MNIST test)") for r in group)
    cell = lambda key: mean_sd([r[key] for r in group], 100) if key else ""
    lines = ["", f"## {name}: {len(group)} checkpoint(s), thresholds {rules}", "",
             *table("measure", "target", "value", "accuracy on the accepted digits", "result")]
    for label, goal_key, key, accuracy, at_least in [
            ("non-digits rejected", "nondigits", "nondigits", None, True),
            ("MNIST test digits rejected", "mnist_rejected", "mnist rejected", "mnist accuracy accepted", False),
            ("MNIST test accuracy, all digits", "accuracy", "mnist accuracy", None, True),
            *((f"shift `{f}`: digits accepted", "shift_accepted", f"{f} accepted", f"{f} accuracy accepted", True)
              for f in FAMILIES)]:
        target, result, mean = "—", "—", float(np.mean([r[key] for r in group]))
        if goal_key in goal:
            target = f"{'≥' if at_least else '≤'} {100 * goal[goal_key]:g}"
            result = "**met**" if (mean >= goal[goal_key] if at_least else mean <= goal[goal_key]) else "**missed**"
        lines.append(f"| {label} | {target} | {cell(key)} | {cell(accuracy)} | {result} |")
    return [*lines, "", "Non-digits rejected by kind and by how they were drawn (%): " + ", ".join(
                f"{key.split()[1]} {cell(key)}" for key in group[0] if key.startswith("nondigits ")) + ". At the "
            f"thresholds that reject 0.5 % and 1 % of the MNIST test digits (picked on test: for comparison only), "
            f"{cell('where 0.005')} and {cell('where 0.01')} % of the non-digits are rejected.", "",
            "Non-digits still read as digits (the digit named): " + "; ".join(f"`{Path(r['path']).name}`: " + (
                ", ".join(r["read as digits"][:SHOWN]) or "none") + (f" and {len(r['read as digits']) - SHOWN} more"
                if len(r["read as digits"]) > SHOWN else "") for r in group) + "."]


def main() -> None:
    opts = arguments(__doc__, option("--ckpt", action="append", required=True, metavar="NAME=PATH",
                                     help="a recipe's checkpoint (NAME: best, fast, ...), one per seed"),
                     option("--count", type=int, default=1000, help="shift digits per family (default 1000)"),
                     option("--out", default=str(ROOT / "bench"), help="folder for REJECT.md and reject_curve.png"))
    checkpoints = [item.split("=", 1) for item in opts.ckpt]
    for item, pair in zip(opts.ckpt, checkpoints):
        if len(pair) != 2 or not all(pair):
            raise SystemExit(f"error: --ckpt {item}: give it as NAME=PATH (NAME: the recipe, e.g. best)")
        try:
            read_checkpoint(pair[1])
        except CheckpointError as err:
            raise SystemExit(f"error: {err}") from None
    if not 1 <= opts.count <= 10_000:
        raise SystemExit("error: --count must be between 1 and 10000 (the MNIST test digits)")
    paths = sorted(p for p in NONDIGITS.glob("*") if p.suffix in (".png", ".jpg"))
    if not paths:
        raise SystemExit(f"error: no images in {NONDIGITS}: make them with `python -m bench.nondigits`")
    images, labels = test_digits(Path(opts.data_dir), 10_000)
    with tempfile.TemporaryDirectory(prefix="bench_reject_") as tmp:
        sets = {"nondigits": (*read(paths), np.full(len(paths), -1)),
                "mnist": (torch.from_numpy(images.copy()), np.zeros(len(labels), bool), labels),
                **shift_sets(opts.data_dir, opts.count, Path(tmp))}
    rows = [{"name": name, "path": path, **measure(path, sets, [p.stem for p in paths])}
            for name, path in checkpoints]
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    draw_curves(rows, out / "reject_curve.png")
    recipes = defaultdict(list)
    for row in rows:
        recipes[row["name"]].append(row)
    lines = header("Not a digit: non-digits rejected, digits still read",
                   f"Non-digits: the {len(paths)} images of bench/nondigits/ ({sets['nondigits'][1].sum()} of them "
                   "blank to `predict-images`: no ink found, no digit named, counted as rejected). Digits: the "
                   f"10,000 MNIST test digits as they are, and the first {opts.count:,} of them per handwriting-shift "
                   "family of bench/shift.py, read through predict-images' preprocessing. Each checkpoint at its own "
                   "threshold; a recipe's figures are the mean ± sd over its checkpoints (seeds), in %. Targets: "
                   "issue 22's acceptance (best's accuracy: within today's 99.65 ± 0.08 %, bench/BEST.md), judged "
                   "on the mean. The trade-off over all thresholds: reject_curve.png, below.")
    for name, group in recipes.items():
        lines += recipe_table(name, group)
    write(out / "REJECT.md", [*lines, "", "Checkpoints:", "", *(f"- {r['name']}: `{r['path']}`" for r in rows), "",
                              "![trade-off: non-digits rejected against digits rejected](reject_curve.png)"])


if __name__ == "__main__":
    main()
