"""`tune` as a user runs it: cnn3block's learning rate and warm-up in short trials, with and without pruning, against
the recipe's own validation accuracy; then a search on a tutorial recipe (lenet) at a short budget.

    python -m bench.tune                                   # bench/TUNE.md
    python -m bench.tune --only lenet --lenet-trials 3 --lenet-batches 20 --out /tmp/T.md   # a quick check

Each search is the `tune` command in a subprocess, in a fresh folder; what it found is read back from its study
(Optuna's public API on lightning_logs/tune/STUDY/study.db) and its console (the best trial's test accuracy). The
spaces searched are written beside the studies and shown in the results file. Trials of a study all use seed 0; the
recipe, and each study's best options, are then trained with the CLI's `fit` for every seed of --seeds with the same
budget, so that the comparison is not one lucky batch order."""

import functools
import re
import tempfile
import time
from pathlib import Path

import optuna
import yaml

from bench.common import CLI, arguments, fit_cli, header, mean_sd, option, run, table, write
from mnist_lit.training.tune_space import SPACES

TRIAL_SEED = 0
# 5 batches of 1,000 for each evaluation after an epoch: the whole validation split, the test set's first half (the
# per-epoch test curve nobody here reads); the test after the fit (limit_test_batches) stays whole
EVAL = ["--trainer.limit_val_batches", "5"]


def space(model: str, keys: tuple[str, ...] | None, pruner: str) -> str:
    """The shipped space's lines for ``keys`` (all its lines: None), then ``pruner`` and a seeded sampler."""
    lines = (SPACES / f"{model}.yaml").read_text().splitlines()
    kept = [line for line in lines if keys is None or line.split(":")[0] in keys]
    if keys is not None:
        kept = [line for line in kept if not line.startswith("pruner:")] + [f"pruner: {pruner}"]
    return "\n".join([*kept, f"sampler: {{type: tpe, seed: {TRIAL_SEED}}}"]) + "\n"


def tune(work: Path, study: str, model: str, text: str, trials: int, budget: list[str], data_dir: str) -> dict:
    """``tune`` in ``work``: its command, wall time, trials, epochs trained, best trial and that trial's test figure."""
    (work / f"{study}.yaml").write_text(text)
    args = ["tune", "--model", model, "--trials", str(trials), "--study", study, "--space", f"{study}.yaml",
            "--seed_everything", str(TRIAL_SEED), *budget, "--trainer.enable_progress_bar", "false"]
    start = time.perf_counter()
    done = run([*CLI, *args, "--data.data_dir", data_dir], cwd=work)
    seconds = time.perf_counter() - start
    test = re.search(r"^test accuracy of trial \d+'s checkpoint .*: ([0-9.]+)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or not test:
        raise SystemExit(f"error: tune --study {study} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    found = optuna.load_study(study_name=study, storage=f"sqlite:///{work}/lightning_logs/tune/{study}/study.db")
    states = [t.state.name.lower() for t in found.trials]
    return {"command": "python -m mnist_lit.cli " + " ".join(args), "seconds": seconds, "trials": found.trials,
            "states": ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states)),
            "epochs": sum(t.user_attrs.get("epochs") or 0 for t in found.trials), "best": found.best_trial,
            "test": float(test.group(1)), "table": done.stdout[done.stdout.index("study "):].strip().replace(
                f"sqlite:///{work}/", "sqlite:///")}


def recipe_values(model: str, keys: tuple[str, ...] | None) -> dict:
    """The recipe's own values of the options searched, as `fit --print_config` shows them."""
    config = yaml.safe_load(run([*CLI, "fit", "--model", model, "--print_config"]).stdout)
    names = [k for k in yaml.safe_load(space(model, keys, "none")) if k not in ("pruner", "sampler")]
    return {name: functools.reduce(dict.get, name.split("."), config) for name in names}


def fits(model: str, seeds: list[int], budget: list[str], options: dict, data_dir: str) -> list[dict]:
    """``fit`` of the recipe with ``options`` for each seed: its best validation and its test accuracy."""
    extra = [text for name, value in options.items() for text in (f"--{name}", str(value))]
    out = []
    for seed in seeds:
        done = fit_cli(model, seed, *budget, "--select_on", "val", *extra, data_dir=data_dir)
        out.append({**done, "val": float(re.search(r"val_acc=([0-9.]+)\.ckpt$", done["best"]).group(1))})
    return out


def row(name: str, found: dict, runs: list[dict], search: dict | None = None, budget: int = 0) -> str:
    vals, tests = [r["val"] for r in runs], [r["acc"] for r in runs]
    each = ", ".join(f"{100 * v:.2f}" for v in vals)
    if search is None:
        done = f"— | {budget} per fit | {mean_sd([r['seconds'] for r in runs], digits=0)} s per fit | —"
        test = f"{mean_sd(tests, 100)} %"
    else:
        done = (f"{len(search['trials'])}: {search['states']} | {search['epochs']} | {search['seconds']:.0f} s "
                f"| {100 * search['best'].value:.2f} % (trial {search['best'].number})")
        test = f"{100 * search['test']:.2f} % (tune's, seed {TRIAL_SEED}); {mean_sd(tests, 100)} % over the seeds"
    shown = ", ".join(f"{k.split('.')[-1]} {v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]} {v}"
                      for k, v in found.items())
    return f"| {name} | {shown} | {done} | {mean_sd(vals, 100)} % ({each}) | {test} |"


def main() -> None:
    opts = arguments(__doc__, option("--trials", type=int, default=8, help="trials per cnn3block study"),
                     option("--epochs", type=int, default=3), option("--batches", type=int, default=50,
                                                                      help="training batches per epoch"),
                     option("--lenet-trials", type=int, default=8), option("--lenet-epochs", type=int, default=2),
                     option("--lenet-batches", type=int, default=200),
                     option("--seeds", nargs="*", type=int, default=[0, 1], help="seeds of the fit comparisons"),
                     option("--only", nargs="*", default=["cnn3block", "lenet"], help="sections to run"),
                     option("--keep", help="work in this folder (kept) instead of a temporary one"), out="TUNE.md")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(opts.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        sections, commands, trained = [], [], {}
        for model, studies, trials, budget, searched in (
            ("cnn3block", {"cnn3block-nopruning": "{type: none}",
                           "cnn3block-median": "{type: median, n_startup_trials: 3, n_warmup_steps: 0}"},
             opts.trials, ["--trainer.max_epochs", str(opts.epochs), "--trainer.limit_train_batches",
                           str(opts.batches), *EVAL],
             ("model.lr", "model.warmup_steps")),
            ("lenet", {"lenet": ""}, opts.lenet_trials,
             ["--trainer.max_epochs", str(opts.lenet_epochs), "--trainer.limit_train_batches", str(opts.lenet_batches),
              *EVAL],
             None),
        ):
            if model not in opts.only:
                continue
            runs = fits(model, opts.seeds, budget, {}, opts.data_dir)
            recipe_opts = recipe_values(model, searched)
            lines = [f"## `{model}`: {' '.join(budget)}", "", *table(
                "run", "options", "trials", "epochs trained", "wall time", "best val/acc of the study",
                f"val/acc, `fit` seeds {' '.join(map(str, opts.seeds))} (each)", "test accuracy"),
                row("the recipe", recipe_opts, runs, budget=int(budget[1]))]
            commands.append(runs[0]["command"] + "  # and each seed")
            spaces, tables = [], []
            for study, pruner in studies.items():
                text = space(model, searched, pruner)
                result = tune(work, study, model, text, trials, budget, opts.data_dir)
                key = (model, *sorted(result["best"].params.items()))  # both studies may find the same options
                if key not in trained:
                    trained[key] = fits(model, opts.seeds, budget, result["best"].params, opts.data_dir)
                best = trained[key]
                lines.append(row(f"`tune` {study}", result["best"].params, best, result))
                commands += [result["command"], best[0]["command"] + "  # and each seed"]
                spaces += [f"`{study}.yaml`:", "", "```yaml", text.strip(), "```", ""]
                tables += [f"`{study}`:", "", "```text", result["table"], "```", ""]
                print(lines[-1], flush=True)
            sections += [*lines, "", *spaces, *tables]
    intro = ("Each `tune` ran in a fresh folder, trials one after another in its process, each trial scored by its "
             f"best `val/acc` (5,000 held-out training digits) with seed {TRIAL_SEED}. The recipe's own row, and each "
             "study's best options, were then trained by `fit` with the same budget and `--select_on val` for each "
             "seed: their val/acc is the kept checkpoint's (mean ± sd, then each value), their test accuracy that "
             "checkpoint's on the official 10,000 test digits. Wall times are of the whole command on a shared "
             "2-core machine: compare them within this run only. Commands (each `fit` also ran with `--seed_everything "
             "S` for the other seeds, each command with `--data.data_dir DATA` and `--trainer.enable_progress_bar "
             "false`):\n\n" + "\n".join(f"    {c}" for c in commands))
    write(opts.out, header("`tune`: searches with and without pruning, against the recipes' own options", intro)
          + sections)


if __name__ == "__main__":
    main()
