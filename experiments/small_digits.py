"""Why does `best` reject digits written small (bench/REJECT.md: 72 % of the `small` family accepted)?

    python -m experiments.small_digits --ckpt PATH --ckpt PATH2   # prints one table

bench/shift.py's `small` draws a digit 8–12 px high (a coarse scan, BOX filter) and enlarges it 4–8× with NEAREST:
it is both small and blocky. Each variant below changes one of the two, on the same 1,000 MNIST test digits, read
as predict-images reads them; the table gives the share accepted at each checkpoint's own threshold.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.shift import _on_paper
from mnist_lit.data.preprocess import load_mnist
from mnist_lit.inference.predictor import Predictor
from tests.digits import test_digits


def drawn(height_range: tuple[int, int], enlarge: Image.Resampling):
    def draw(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
        rows, cols = np.nonzero(digit > 25)
        box = Image.fromarray(digit[rows.min():rows.max() + 1, cols.min():cols.max() + 1])
        height = int(rng.integers(*height_range))
        tiny = box.resize((max(1, round(box.width * height / box.height)), height), Image.Resampling.BOX)
        factor, tiny = int(rng.integers(4, 9)), Image.fromarray(np.pad(np.asarray(tiny), 2))
        return _on_paper(tiny.resize((tiny.width * factor, tiny.height * factor), enlarge), rng)
    return draw


VARIANTS = {
    "small as in bench (8-12 px, NEAREST)": drawn((8, 13), Image.Resampling.NEAREST),
    "8-12 px, BICUBIC enlarged": drawn((8, 13), Image.Resampling.BICUBIC),
    "16 px, NEAREST": drawn((16, 17), Image.Resampling.NEAREST),
    "16 px, BICUBIC": drawn((16, 17), Image.Resampling.BICUBIC),
    "20 px, NEAREST": drawn((20, 21), Image.Resampling.NEAREST),
    "20 px, BICUBIC": drawn((20, 21), Image.Resampling.BICUBIC),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", action="append", required=True)
    parser.add_argument("--count", type=int, default=1000)
    opts = parser.parse_args()
    digits, labels = test_digits(Path("data"), opts.count)
    predictors = [Predictor.from_checkpoint(path) for path in opts.ckpt]
    print("| variant | " + " | ".join(f"accepted, ckpt {i}" for i in range(len(predictors))) + " | accuracy |")
    print("|---|" + "---|" * (len(predictors) + 1))
    for k, (name, draw) in enumerate(VARIANTS.items()):
        rng = np.random.default_rng([0, 3])  # bench/shift.py's seed for `small` (family 3)
        with tempfile.TemporaryDirectory() as folder:
            images = []
            for i, digit in enumerate(digits):
                path = Path(folder) / f"{i}.png"
                draw(digit, rng).convert("RGB").save(path)
                images.append(load_mnist(path))
        images = torch.stack(images)
        accepted, correct = [], []
        for predictor in predictors:
            probs = predictor.probabilities(images)
            _, is_digit = predictor.judge(probs)
            accepted.append(f"{100 * is_digit.float().mean():.1f} %")
            correct.append(100 * (probs.argmax(1).numpy() == labels).mean())
        print(f"| {name} | " + " | ".join(accepted) + f" | {np.mean(correct):.1f} % |")


if __name__ == "__main__":
    main()
