"""Side by side, in one run: how long ``python -m mnist_lit.cli --help`` takes, with and without its fast path.

    python bench/startup.py            # full: 5 timed runs of each command
    python bench/startup.py --quick    # smoke run: 2 timed runs of each

Every command is a fresh process, as a user starts it, timed from start to exit. The commands take turns, one
round after another, so a change in the machine's load falls on all of them alike; an untimed round first warms
the file cache. ``COLUMNS=100`` for all, the width ``mnist_lit/cli_help.txt`` is rendered at, and the run checks
that the fast path and LightningCLI print the same text. Writes bench/STARTUP.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIVE_HELP = "import sys; sys.argv += ['--help']; from mnist_lit import cli; cli.main()"
# (what it is, arguments after `python`); the first two must print the same text.
COMMANDS = [
    ("`--help`, fast path: prints mnist_lit/cli_help.txt", ["-m", "mnist_lit.cli", "--help"]),
    ("`--help` rendered live by LightningCLI (the fast path skipped)", ["-c", LIVE_HELP]),
    ("`fit --help`: a subcommand's help is always live", ["-m", "mnist_lit.cli", "fit", "--help"]),
    ("`import torch`", ["-c", "import torch"]),
    ("`import lightning.pytorch`", ["-c", "import lightning.pytorch"]),
]


def run(args: list[str]) -> tuple[float, str]:
    """Seconds from start to exit of ``python ARGS``, and what it printed."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env={**os.environ, "COLUMNS": "100"},
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"python {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def shown(args: list[str]) -> str:
    """The command as a reader would type it."""
    return "python " + " ".join(f'"{arg}"' if " " in arg else arg for arg in args)


def load_average() -> str:
    return ", ".join(f"{load:.2f}" for load in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 timed runs of each: a smoke run, not figures")
    parser.add_argument("--out", default=str(ROOT / "bench" / "STARTUP.md"))
    opts = parser.parse_args()
    runs = 2 if opts.quick else 5

    load_at_start = load_average()
    printed = [run(args)[1] for _, args in COMMANDS]  # the untimed round
    if printed[0] != printed[1]:
        raise RuntimeError("the fast path's help differs from LightningCLI's: see tests/test_cli.py to regenerate it")
    times: list[list[float]] = [[] for _ in COMMANDS]
    for round_ in range(runs):
        for seconds, (_, args) in zip(times, COMMANDS):
            seconds.append(run(args)[0])
        print(f"round {round_ + 1}/{runs}:", " ".join(f"{t[-1]:.3f}" for t in times), flush=True)

    fast = statistics.median(times[0])
    lines = [
        "# Startup: `python -m mnist_lit.cli --help` with and without its fast path",
        "",
        (f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; Python "
         f"{platform.python_version()}, torch {version('torch')}, lightning {version('lightning')}, "
         f"jsonargparse {version('jsonargparse')}."),
        "",
        (f"Load average (1, 5, 15 min) at start: {load_at_start}; at the end: {load_average()}. The machine is "
         "shared, so the median is the figure to read; the minimum is the least disturbed run."),
        "",
        (f"Produced by: `{' '.join(['python bench/startup.py', *sys.argv[1:]])}` ({runs} timed runs of each "
         f"command, {'quick' if opts.quick else 'full'}; each a fresh process, wall time from start to exit)."),
        "",
        "| what | command | median ms | min ms | median / fast path |",
        "|---|---|---|---|---|",
    ]
    for (what, args), seconds in zip(COMMANDS, times):
        median = statistics.median(seconds)
        lines.append(f"| {what} | `{shown(args)}` | {1000 * median:,.0f} | {1000 * min(seconds):,.0f} "
                     f"| {median / fast:.0f}× |")
    Path(opts.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
