"""How ``serve`` holds up under concurrent keep-alive clients, beside ``predict-images`` on the same photos (CPU).

    python -m bench.serve_load --ckpt PATH                                   # bench/SERVE.md
    python -m bench.serve_load --ckpt PATH --serve-options '--max-batch-size 1' --requests 300 --out /tmp/SERVE-mbs1.md
"""

import asyncio
import base64
import json
import os
import re
import shlex
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import arguments, checkpoint, header, option, photo_folder, predict_images, table, write
from tests.serving import ServeProcess


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by ``pid`` and every process below it, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    except OSError:  # it has just ended
        return 0.0
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK") + sum(map(cpu_seconds, children))


async def load_level(port: int, clients: int, total: int, bodies: list[bytes], labels: np.ndarray, server: int) -> dict:
    """``clients`` connections sending ``total`` POST /predict between them, each its next when its last is answered."""
    sent, latencies, batches, errors, correct = 0, [], [], [], 0

    async def client() -> None:
        nonlocal sent, correct
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while sent < total:
            i, sent = sent % len(bodies), sent + 1
            start = time.perf_counter()
            try:
                writer.write(b"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(bodies[i]), bodies[i]))
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)[1])
                status, content = int(head.split(b" ", 2)[1]), await reader.readexactly(length)
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
            batches.append(answer["batch_size"])
            correct += answer["digit"] == labels[i]
        writer.close()

    server_cpu, client_cpu, start = cpu_seconds(server), time.process_time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - start
    cpu = (f"{1000 * (cpu_seconds(server) - server_cpu) / total:.1f} + "
           f"{1000 * (time.process_time() - client_cpu) / total:.1f}")
    if not batches:
        raise SystemExit(f"error: no request of {total} was answered with a digit; first errors: {errors[:3]}")
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": total, "per_s": total / wall, "errors": errors, "cpu": cpu,
            **{f"p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)}, "max": float(ms.max()),
            "batch_mean": float(np.mean(batches)), "batch_max": int(max(batches)), "acc": correct / len(batches)}


def main() -> None:
    opts = arguments(__doc__, option("--requests", type=int, default=3000, help="requests per level (default 3000)"),
                     option("--levels", type=int, nargs="+", default=[1, 8, 32, 64], help="concurrent clients"),
                     option("--serve-options", default="", help="e.g. '--workers 2'"), out="SERVE.md", photos=True)
    ckpt, net = checkpoint(opts.ckpt)
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        tmp = Path(tmp)
        photos, labels = photo_folder(tmp / "photos", opts.count, opts.data_dir)
        bodies = [json.dumps({"image": base64.b64encode(p.read_bytes()).decode()}).encode() for p in photos]
        size = statistics.median(p.stat().st_size for p in photos)
        offline = predict_images(ckpt, [tmp / "photos"], labels, cwd=tmp)
        server = ServeProcess(Path(ckpt), *shlex.split(opts.serve_options), cwd=tmp / "serve")  # as a user starts it
        try:
            ready, port, pid = server.wait_ready(180), server.port, server.proc.pid
            asyncio.run(load_level(port, 8, min(400, opts.requests), bodies, labels, pid))  # warm-up, not counted
            levels = [asyncio.run(load_level(port, n, opts.requests, bodies, labels, pid)) for n in opts.levels]
        finally:
            server.stop()
        log = server.stdout + server.stderr

    by_clients = {r["clients"]: r for r in levels}
    one = by_clients.get(1, levels[0])
    lines = header(
        "serve under load: requests/s, latency and batches, beside predict-images",
        f"Checkpoint: `{Path(ckpt).name}`, network **{net}**. Server: `python -m mnist_lit.cli serve --ckpt CKPT "
        f"{opts.serve_options}".rstrip() + f"` (ready {ready:.1f} s after launch). Requests: `POST /predict` with "
        f"`{{\"image\": base64 PNG}}` of the first {opts.count:,} MNIST test digits photographed (seed 0; median "
        f"PNG {size / 1024:.1f} KiB), cycled; 400 warm-up requests (8 clients) first.",
    ) + table("clients", "requests", "requests/s", f"vs {one['clients']} client(s)", "vs predict-images", "p50 ms",
              "p90 ms", "p99 ms", "max ms", "batch mean / max", "errors", "accuracy",
              "CPU ms per request: server + clients")
    lines += [f"| {r['clients']} | {r['requests']:,} | {r['per_s']:.1f} | {r['per_s'] / one['per_s']:.2f}× "
              f"| {r['per_s'] / offline['per_s']:.2f}× | {r['p50']:.1f} | {r['p90']:.1f} | {r['p99']:.1f} "
              f"| {r['max']:.0f} | {r['batch_mean']:.1f} / {r['batch_max']} | {len(r['errors'])} "
              f"| {100 * r['acc']:.1f} % | {r['cpu']} |" for r in levels]
    lines += ["", (f"predict-images on the same files, launch to exit: {offline['per_s']:.1f} images/s "
                   f"({offline['seconds']:.2f} s), {100 * offline['correct'] / offline['n']:.1f} % correct. CPU ms "
                   "per request: the CPU time of the server's processes and of the clients during the level, over its "
                   f"requests; with {os.cpu_count()} CPUs, {os.cpu_count()} × 1000 / (their sum) is the most "
                   "requests/s this machine could answer."),
              "", "Targets (issue 14): 0 errors at every level: " + ", ".join(str(len(r["errors"])) for r in levels)]
    if 32 in by_clients and 1 in by_clients:
        ratio, p99 = by_clients[32]["per_s"] / by_clients[1]["per_s"], by_clients[32]["p99"]
        lines[-1] += (f"; 32 clients ≥ 5× one client's rate: {'met' if ratio >= 5 else '**missed**'} ({ratio:.2f}×); "
                      f"p99 at 32 clients < 250 ms: {'met' if p99 < 250 else '**missed**'} ({p99:.1f} ms).")
    errors = sorted({f"- {r['clients']} clients: {e}" for r in levels for e in r["errors"]})[:10]
    lines += ["", *(["Errors seen:", "", *errors, ""] if errors else [])]
    if "Traceback" in log or "ERROR" in log:
        lines += ["Server log (errors):", "", "```", log[-2000:], "```"]
    write(opts.out, lines)


if __name__ == "__main__":
    main()
