"""How ``serve`` holds up under concurrent clients, side by side with ``predict-images`` on the same photos (CPU).

    python bench/serve_load.py --ckpt PATH                                           # SERVE.md, serve_page.png
    python bench/serve_load.py --ckpt PATH --requests 300 --levels 1 8 --out-dir /tmp/smoke   # a smoke run

The first ``--count`` MNIST test digits are re-drawn as photographs (bench/predict_images.py's own function: dark on
white, 3–6× larger, off-centre) and saved as PNG files. In one run, on the same machine and the same photos:

* ``predict-images`` reads the whole folder (launch to exit, so start-up is included, as a user sees it);
* ``serve`` is started as a user starts it, warmed up, then each concurrency level sends ``--requests`` requests
  ``{"image": base64 PNG}`` from that many clients at once, each client sending its next request as soon as its last
  one is answered (keep-alive connections). Per level: requests/s, latency percentiles, the batch sizes the server
  formed (each answer says its batch's size), errors (anything but a 200 with a digit) and accuracy;
* a screenshot of the drawing page with a digit drawn on it, in Chromium (``--screenshot``, needs Playwright).

The clients are a small asyncio HTTP/1.1 client in this process, on the same 2 cores as the server: it is cheap
(no HTTP library per request), but its CPU is not the server's, so the server's own capacity is somewhat higher.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import io
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.predict_images import network_name, test_digits, write_photos  # noqa: E402

PYTHON = [sys.executable, "-m", "mnist_lit.cli"]
SEVEN = [[(0.25, 0.22), (0.75, 0.22), (0.45, 0.82)]]  # the screenshot's digit: a bar, then the long diagonal


# ------------------------------------------------------------------------------------------------ the server ---

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(ckpt: str, port: int, options: list[str], log: Path) -> subprocess.Popen:
    """``serve`` as a user starts it; returns once it says it is ready (every worker loaded)."""
    out = open(log, "w")
    proc = subprocess.Popen([*PYTHON, "serve", "--ckpt", ckpt, "--port", str(port), *options], stdout=out,
                            stderr=subprocess.STDOUT, cwd=log.parent)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"error: serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        if "ready:" in log.read_text():
            return proc
        time.sleep(0.2)
    proc.terminate()
    sys.exit(f"error: serve not ready after 180 s:\n{log.read_text()[-3000:]}")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by ``pid`` and every process below it, from /proc."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, utime + stime
    tree, frontier = {pid}, {pid}
    while frontier:
        frontier = {p for p, (parent, _) in stats.items() if parent in frontier} - tree
        tree |= frontier
    return sum(stats[p][1] for p in tree if p in stats) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------------ the clients ---

async def post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> tuple[int, bytes]:
    """One POST /predict on a keep-alive connection; returns the status and the body."""
    writer.write(b"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))
    return status, await reader.readexactly(length)


async def load_level(port: int, clients: int, total: int, bodies: list[bytes], labels: np.ndarray) -> dict:
    """``clients`` connections sending ``total`` requests between them, as fast as they are answered."""
    sent = 0
    latencies, batch_sizes, errors, correct = [], [], [], 0

    async def client() -> None:
        nonlocal sent, correct
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while sent < total:
                i = sent % len(bodies)
                sent += 1
                start = time.perf_counter()
                try:
                    status, content = await post(reader, writer, bodies[i])
                except (OSError, asyncio.IncompleteReadError) as err:
                    errors.append(f"{type(err).__name__}: {err}")
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append(time.perf_counter() - start)
                answer = json.loads(content)
                if status != 200 or answer.get("digit") is None:
                    errors.append(f"{status}: {content[:200]!r}")
                    continue
                batch_sizes.append(answer["batch_size"])
                correct += answer["digit"] == labels[i]
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - start
    if not batch_sizes:
        sys.exit(f"error: no request of {total} was answered with a digit; first errors: {errors[:3]}")
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": total, "wall": wall, "per_s": total / wall, "errors": errors,
            "p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "max": float(ms.max()), "batch_mean": float(np.mean(batch_sizes)),
            "batch_p50": float(np.median(batch_sizes)), "batch_max": int(max(batch_sizes)),
            "correct": correct, "answered": len(batch_sizes)}


# ----------------------------------------------------------------------------------------------- the other two ---

def predict_images(ckpt: str, folder: Path, labels: np.ndarray, cwd: Path) -> dict:
    """``predict-images`` on the whole folder, launch to exit; images/s and accuracy from its CSV."""
    start = time.perf_counter()
    done = subprocess.run([*PYTHON, "predict-images", "--ckpt", ckpt, "--format", "csv", str(folder)], cwd=cwd,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"error: predict-images exited {done.returncode}:\n{done.stderr[-3000:]}")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    correct = sum(row["digit"] != "" and int(row["digit"]) == labels[int(Path(row["path"]).stem)] for row in rows)
    return {"wall": wall, "per_s": len(labels) / wall, "correct": correct, "n": len(labels)}


def screenshot(url: str, path: Path) -> str:
    """The drawing page in headless Chromium with a 7 drawn on it; returns what the page read."""
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("MNIST_LIT_CHROMIUM") or "/usr/bin/chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 720, "height": 430})
        page.goto(f"{url}/ui/")
        box = page.locator("#pad").bounding_box()
        for stroke in SEVEN:
            page.mouse.move(box["x"] + stroke[0][0] * box["width"], box["y"] + stroke[0][1] * box["height"])
            page.mouse.down()
            for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
                for t in np.linspace(0, 1, 12)[1:]:
                    page.mouse.move(box["x"] + (x0 + t * (x1 - x0)) * box["width"],
                                    box["y"] + (y0 + t * (y1 - y0)) * box["height"])
                    page.wait_for_timeout(15)
            page.mouse.up()
        page.wait_for_function("document.getElementById('seen').naturalWidth === 28")
        page.wait_for_timeout(300)  # the bars' transition
        read = page.locator("#digit").inner_text()
        page.screenshot(path=str(path))
        browser.close()
    return read


# ----------------------------------------------------------------------------------------------------- report ---

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a .ckpt written by `python -m mnist_lit.cli fit`")
    parser.add_argument("--data-dir", default="data", help="folder holding MNIST/raw (default: data)")
    parser.add_argument("--count", type=int, default=1000, help="photographed test digits (default 1000)")
    parser.add_argument("--requests", type=int, default=3000, help="requests per concurrency level (default 3000)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32, 64], help="concurrent clients")
    parser.add_argument("--serve-options", default="", help="options for serve, e.g. '--workers 2'")
    parser.add_argument("--compare", nargs="*", default=[], metavar="OPTIONS",
                        help="other serve options to measure after the main ones, e.g. '--workers 2' (fewer "
                             "requests: --compare-requests)")
    parser.add_argument("--compare-requests", type=int, default=1000, help="requests per level for --compare")
    parser.add_argument("--screenshot", action=argparse.BooleanOptionalAction, default=True,
                        help="also write serve_page.png, the page in Chromium with a digit drawn (default: yes)")
    parser.add_argument("--out-dir", default=str(ROOT / "bench"), help="where SERVE.md goes (default: bench/)")
    opts = parser.parse_args()
    ckpt = str(Path(opts.ckpt).resolve())
    if not Path(ckpt).is_file():
        sys.exit(f"error: --ckpt {opts.ckpt}: no such file")
    out_dir = Path(opts.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    net = network_name(ckpt)
    serve_options = shlex.split(opts.serve_options)
    load = os.getloadavg()

    digits, labels = test_digits(Path(opts.data_dir), opts.count)
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        tmp = Path(tmp)
        folder, cwd = tmp / "photos", tmp / "cwd"
        folder.mkdir()
        cwd.mkdir()
        print(f"photographing {opts.count} test digits into {folder} ...", flush=True)
        photos = write_photos(digits, folder, seed=0)
        bodies = [json.dumps({"image": base64.b64encode(p.read_bytes()).decode()}).encode() for p in photos]
        size = statistics.median(p.stat().st_size for p in photos)

        offline = predict_images(ckpt, folder, labels, cwd)
        print(f"predict-images: {offline['per_s']:.1f} images/s ({offline['wall']:.2f} s)", flush=True)

        def measure(options: list[str], requests: int, shot: Path | None = None) -> dict:
            """Start serve with ``options``, warm it up, run every level, optionally take the screenshot, stop it."""
            print(f"serve {shlex.join(options)}", flush=True)
            port = free_port()
            started = time.perf_counter()
            server = start_server(ckpt, port, options, tmp / "serve.log")
            run = {"options": options, "ready": time.perf_counter() - started, "levels": [], "read": None}
            try:
                asyncio.run(load_level(port, 8, min(400, requests), bodies, labels))  # warm-up, not counted
                for clients in opts.levels:
                    server_cpu, client_cpu = cpu_seconds(server.pid), time.process_time()
                    result = asyncio.run(load_level(port, clients, requests, bodies, labels))
                    result["server_cpu_ms"] = 1000 * (cpu_seconds(server.pid) - server_cpu) / requests
                    result["client_cpu_ms"] = 1000 * (time.process_time() - client_cpu) / requests
                    run["levels"].append(result)
                    print(f"  {clients} clients: {result['per_s']:.1f} requests/s, p50 {result['p50']:.1f} ms, "
                          f"p99 {result['p99']:.1f} ms, mean batch {result['batch_mean']:.1f}, "
                          f"{len(result['errors'])} errors", flush=True)
                if shot:
                    run["read"] = screenshot(f"http://127.0.0.1:{port}", shot)
                    print(f"  screenshot: {shot} (the page read a drawn 7 as {run['read']})", flush=True)
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(60)
            run["log"] = (tmp / "serve.log").read_text()
            return run

        main_run = measure(serve_options, opts.requests, out_dir / "serve_page.png" if opts.screenshot else None)
        others = [measure(shlex.split(options), opts.compare_requests) for options in opts.compare]

    levels, ready, read, log = main_run["levels"], main_run["ready"], main_run["read"], main_run["log"]

    by_clients = {r["clients"]: r for r in levels}
    one = by_clients.get(1)

    def target(ok: bool) -> str:
        return "met" if ok else "**missed**"

    rows = []
    for r in levels:
        ratio = f"{r['per_s'] / one['per_s']:.2f}×" if one else "n/a"
        rows.append(f"| {r['clients']} | {r['requests']:,} | {r['per_s']:.1f} | {ratio} | "
                    f"{r['per_s'] / offline['per_s']:.2f}× | {r['p50']:.1f} | {r['p90']:.1f} | {r['p99']:.1f} | "
                    f"{r['max']:.0f} | {r['batch_mean']:.1f} / {r['batch_p50']:.0f} / {r['batch_max']} | "
                    f"{len(r['errors'])} | {100 * r['correct'] / max(1, r['answered']):.1f} % | "
                    f"{r['server_cpu_ms']:.1f} + {r['client_cpu_ms']:.1f} |")
    checks = []
    checks.append(f"- 0 errors at every level: {target(all(not r['errors'] for r in levels))} "
                  f"({', '.join(str(len(r['errors'])) for r in levels)})")
    if one and 32 in by_clients:
        ratio = by_clients[32]["per_s"] / one["per_s"]
        checks.append(f"- throughput at 32 clients ≥ 5× one client's: {target(ratio >= 5)} ({ratio:.2f}×)")
        checks.append(f"- p99 latency at 32 clients < 250 ms: {target(by_clients[32]['p99'] < 250)} "
                      f"({by_clients[32]['p99']:.1f} ms)")
    error_lines = [f"- {r['clients']} clients: {e}" for r in levels for e in sorted(set(r["errors"]))[:5]]

    lines = [
        "# serve under load: requests/s, latency and batches on CPU, beside predict-images",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}; torch {torch.__version__}, "
        f"Python {platform.python_version()}. Load average at start: {load[0]:.2f}.",
        "",
        f"Produced by: `python bench/{Path(__file__).name} {shlex.join(sys.argv[1:])}`".rstrip(),
        "",
        f"Checkpoint: `{Path(ckpt).name}`, network **{net}**. Server: "
        f"`{' '.join(['python -m mnist_lit.cli serve --ckpt CKPT', *map(shlex.quote, serve_options)])}` "
        f"(ready {ready:.1f} s after launch).",
        "",
        f"Requests: `POST /predict` with `{{\"image\": base64 PNG}}` of the first {opts.count:,} MNIST test digits "
        f"re-drawn as photographs (bench/predict_images.py's function, seed 0; median PNG {size / 1024:.1f} KiB), "
        f"cycled. Each client sends its next request when its last one is answered, on one keep-alive connection; "
        f"the clients run in this process on the same CPUs as the server. 400 warm-up requests (8 clients) first.",
        "",
        "| clients | requests | requests/s | vs 1 client | vs predict-images | p50 ms | p90 ms | p99 ms | max ms | "
        "batch mean / p50 / max | errors | accuracy | CPU ms per request: server + clients |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"predict-images on the same {opts.count:,} photo files, in the same run (launch to exit, start-up "
        f"included): {offline['per_s']:.1f} images/s ({offline['wall']:.2f} s), "
        f"{100 * offline['correct'] / offline['n']:.1f} % correct. \"vs predict-images\" divides the server's "
        f"requests/s by that rate. CPU ms per request: the CPU time (user + system) the server's processes and "
        f"the clients used during the level, divided by its requests; on {os.cpu_count()} CPUs, "
        f"{os.cpu_count()} × 1000 / (their sum) is the most requests/s this machine could answer.",
        "",
        "Targets (issue 14):",
        "",
        *checks,
        "",
        *(["Errors seen:", "", *error_lines, ""] if error_lines else []),
        *([f"![the drawing page in Chromium, a drawn 7 read as {read}](serve_page.png)", ""] if opts.screenshot else []),
    ]
    if others:
        lines += [f"Other serve options, same photos, {opts.compare_requests:,} requests per level, measured after "
                  f"the table above in the same run:", "",
                  "| serve options | clients | requests/s | p50 ms | p99 ms | batch mean / max | errors | "
                  "CPU ms/request (server + clients) |",
                  "|---|---|---|---|---|---|---|---|"]
        for run in [main_run, *others]:
            shown = f"`{shlex.join(run['options'])}`" if run["options"] else "(defaults)"
            lines += [f"| {shown} | {r['clients']} | {r['per_s']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} | "
                      f"{r['batch_mean']:.1f} / {r['batch_max']} | {len(r['errors'])} | "
                      f"{r['server_cpu_ms']:.1f} + {r['client_cpu_ms']:.1f} |" for r in run["levels"]]
        lines += ["", "(The first rows repeat the main table's, measured with its request count.)", ""]
    if "Traceback" in log or "ERROR" in log:
        lines += ["Server log (errors):", "", "```", log[-2000:], "```", ""]
    (out_dir / "SERVE.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
