"""Train each recipe with the real CLI and record its test accuracy and wall time: README's models table.

    python -m bench.recipes                        # the six tutorial recipes, full epochs: bench/RECIPES.md
    python -m bench.recipes --only mlp --seeds 0 1 2 --out /tmp/R.md
"""

from bench.common import arguments, fit_cli, header, option, recipe, table, write

TUTORIAL = {"lenet5": "≈ 98.4 %", "lenet": "—", "cnn3block": "98–99 %", "cnn3block5x5": "98–99 %", "mlp": "≈ 98 %",
            "bncnn": "≈ 99 %"}


def main() -> None:
    opts = arguments(__doc__, option("--only", nargs="*", default=list(TUTORIAL), help="recipes to run"),
                     option("--seeds", nargs="*", type=int, default=[0]), out="RECIPES.md")
    lines = header("Recipe accuracy", "Test accuracy of the checkpoint each run selected (on the split its recipe "
                   "names: `select_on`), on the official 10,000 test digits; wall time of the whole command.") + table(
        "recipe", "seed", "epochs", "test accuracy", "tutorial", "wall time", "command")
    for model in opts.only:
        for seed in opts.seeds:
            run = fit_cli(model, seed, data_dir=opts.data_dir)
            lines.append(f"| {model} | {seed} | {recipe(model)['trainer']['max_epochs']} | {100 * run['acc']:.2f} % "
                         f"| {TUTORIAL.get(model, '—')} | {run['seconds']:.0f} s | `{run['command']}` |")
            print(lines[-1], flush=True)
    write(opts.out, lines)


if __name__ == "__main__":
    main()
