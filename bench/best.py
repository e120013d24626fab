"""Train the ``best`` recipe for one seed with the real CLI and add the run to bench/BEST.md as soon as it finishes,
so that seeds can be run one at a time (about 40 minutes each on a 2-core CPU).

    python -m bench.best --seed 0                 # the full recipe
    python -m bench.best --seed 0 --epochs 3      # a shorter budget: recorded as such, never mixed into the mean

Each row: seed, epochs, the checkpoint the validation split picked, its test accuracy (the official 10,000), wall
time, the exact command, and where and when it ran. Below the rows, mean ± sd over the full-recipe runs.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from bench.common import commit, fit_cli, header, machine, mean_sd, parser, recipe, table, write

TABLE = table("seed", "epochs", "selected checkpoint", "test accuracy", "wall time", "command", "notes")


def main() -> None:
    options = parser(__doc__, "BEST.md")
    options.add_argument("--seed", type=int, required=True)
    options.add_argument("--epochs", type=int, help="override the recipe's epoch count (recorded, not averaged)")
    options.add_argument("--keep", help="run in this folder and keep its lightning_logs (default: a temporary one)")
    options.add_argument("--note", default="", help="added to the row's notes")
    opts = options.parse_args()
    full = recipe("best")["trainer"]["max_epochs"]
    epochs = opts.epochs or full

    run = fit_cli(["--model", "best", "--seed_everything", str(opts.seed), "--trainer.enable_progress_bar", "false",
                   *(["--trainer.max_epochs", str(epochs)] if opts.epochs else [])], opts.data_dir, cwd=opts.keep)
    out = Path(opts.out)
    old = out.read_text().splitlines() if out.is_file() else TABLE
    body = [line for line in old[old.index(TABLE[0]):] if not line.startswith("Mean over")]
    end = next((i for i, line in enumerate(body) if not line.startswith("|")), len(body))  # below the first table
    notes = "; ".join(filter(None, [machine(), f"{date.today()}, commit {commit()}", opts.note]))
    body.insert(end, f"| {opts.seed} | {epochs}{'' if epochs == full else f' of {full}'} "
                     f"| `{Path(run['best'] or '?').name}` | {100 * run['acc']:.2f} % | {run['seconds'] / 60:.0f} min "
                     f"| `{run['command']}` | {notes} |")
    runs = [float(line.split("|")[4].strip(" %")) for line in body[:end + 1] if line.split("|")[2].strip() == str(full)]
    mean = ["", f"Mean over the {len(runs)} full-recipe run(s): {mean_sd(runs)} % (sd)."] * bool(runs)
    write(out, header("`best` recipe: test accuracy per seed",
                      "The checkpoint is selected on the validation split; the test accuracy is that checkpoint's on the "
                      "official 10,000 test digits. Each run adds its row (`python -m bench.best --seed N [--epochs E]`); "
                      "the date, machine and commit above are the last row's, each row's own are in its notes.")
          + body[:end + 1] + mean + body[end + 1 + (body[end + 1:end + 3] == ["", ""]):])  # the old mean's blank goes


if __name__ == "__main__":
    main()
