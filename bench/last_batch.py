"""What the last, smaller training batch of an epoch costs: one-epoch test accuracy with ``--data.drop_last`` on/off.

    python bench/last_batch.py                 # 16 seeds × lenet, lenet5, mlp (about 15 minutes here)
    python bench/last_batch.py --seeds 4       # a smoke run

55,000 training images make 859 batches of 64 and one of 24. That last step is taken on a noisier gradient, right
before the epoch's evaluation and checkpoint. Each run is ``Trainer.fit`` on the recipe (bench/speed.py's (b)),
one epoch, seeds 0…N-1; the two settings of one seed share the initial weights and the order of the images.
Writes bench/LAST_BATCH.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from speed import ROOT, mnist_lit_fit


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="*", default=["lenet", "lenet5", "mlp"])
    parser.add_argument("--seeds", type=int, default=16, help="seeds 0 … N-1")
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "LAST_BATCH.md"))
    opts = parser.parse_args()

    import lightning
    import torch

    lines = [
        "# The last, smaller batch of an epoch, kept or dropped",
        "",
        f"One-epoch test accuracy (%) of each recipe, {opts.seeds} seeds, mean ± standard deviation; torch "
        f"{torch.__version__}, lightning {lightning.__version__}, CPU.",
        "",
        f"Produced by: `{' '.join(['python bench/last_batch.py', *sys.argv[1:]])}`.",
        "",
        "| network | last batch kept | last batch dropped (default) | dropped − kept, paired | seeds where dropping "
        "is better |",
        "|---|---|---|---|---|",
    ]
    for net in opts.nets:
        acc = {drop: [100 * mnist_lit_fit(net, 1, None, opts.data_dir, seed, drop_last=drop)["acc"]
                      for seed in range(opts.seeds)] for drop in (False, True)}
        diff = [d - k for d, k in zip(acc[True], acc[False])]
        se = statistics.stdev(diff) / len(diff) ** 0.5
        lines.append(f"| {net} | {mean_sd(acc[False])} | {mean_sd(acc[True])} | {statistics.mean(diff):+.2f} ± "
                     f"{se:.2f} (s.e.) | {sum(d > 0 for d in diff)} of {len(diff)} |")
        print(lines[-1], "\n  kept:", [round(a, 2) for a in acc[False]], "\n  dropped:",
              [round(a, 2) for a in acc[True]], flush=True)
    Path(opts.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
