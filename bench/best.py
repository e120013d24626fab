"""Train the ``best`` recipe for one seed with the CLI and add its row (and the mean) to bench/BEST.md once it ends.

    python -m bench.best --seed 0                 # the full recipe
    python -m bench.best --seed 0 --epochs 3      # a shorter budget: recorded as such, never mixed into the mean
"""

from pathlib import Path

from bench.common import arguments, fit_cli, header, mean_sd, option, recipe, table, this_run, write

TABLE = table("seed", "epochs", "selected checkpoint", "test accuracy", "wall time", "command", "notes")


def main() -> None:
    opts = arguments(__doc__, option("--seed", type=int, required=True),
                     option("--epochs", type=int, help="override the recipe's epoch count (recorded, not averaged)"),
                     option("--keep", help="run in this folder, keeping its lightning_logs"), out="BEST.md")
    full = recipe("best")["trainer"]["max_epochs"]
    epochs = opts.epochs or full
    run = fit_cli("best", opts.seed, *(["--trainer.max_epochs", str(epochs)] if opts.epochs else []),
                  data_dir=opts.data_dir, cwd=opts.keep)
    out, now = Path(opts.out), this_run()
    old = out.read_text().splitlines() if out.is_file() else TABLE
    body = [line for line in old[old.index(TABLE[0]):] if not line.startswith("Mean over")]
    end = next((i for i, line in enumerate(body) if not line.startswith("|")), len(body))  # below the first table
    notes = f"{now['machine']}; {now['date']}, commit {now['commit']}"
    body.insert(end, f"| {opts.seed} | {epochs}{'' if epochs == full else f' of {full}'} "
                     f"| `{Path(run['best'] or '?').name}` | {100 * run['acc']:.2f} % | {run['seconds'] / 60:.0f} min "
                     f"| `{run['command']}` | {notes} |")
    runs = [float(line.split("|")[4].strip(" %")) for line in body[:end + 1] if line.split("|")[2].strip() == str(full)]
    mean = ["", f"Mean over the {len(runs)} full-recipe run(s): {mean_sd(runs)} % (sd)."] * bool(runs)
    write(out, header("`best` recipe: test accuracy per seed",
                      "The checkpoint is selected on the validation split; the test accuracy is that checkpoint's on "
                      "the official 10,000 test digits. Each run adds its row (`python -m bench.best --seed N "
                      "[--epochs E]`); the date, machine and commit above are the last row's, each row's own are in "
                      "its notes.")
          + body[:end + 1] + mean + body[end + 1 + (body[end + 1:end + 3] == ["", ""]):])  # the old mean's blank goes


if __name__ == "__main__":
    main()
