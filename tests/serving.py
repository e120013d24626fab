"""A real ``serve`` process for the tests: a subprocess on a free port, polled on /health until every worker is
ready."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (children, grandchildren, ...), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """Running (a zombie has exited: it only waits for its parent to read its status)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class ServeProcess:
    """``python -m mnist_lit.cli serve --ckpt CKPT --port P OPTIONS`` in ``cwd``; output goes to files in ``cwd``'s
    parent, so that ``cwd`` itself shows whatever the server writes there."""

    def __init__(self, ckpt: Path, *options: str, cwd: Path, new_session: bool = False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cwd.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = cwd.parent / f"{cwd.name}.out", cwd.parent / f"{cwd.name}.err"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mnist_lit.cli", "serve", "--ckpt", str(ckpt), "--port", str(self.port),
                 *options], cwd=cwd, stdout=out, stderr=err, start_new_session=new_session)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def wait_ready(self, timeout: float = 120) -> float:
        """Seconds until /health answered 200 and the server said so; fails with the server's output if it exits or
        takes too long."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.stdout}\n{self.stderr[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as response:
                    if response.status == 200 and "ready:" in self.stdout:  # the line follows /health's 200
                        return time.monotonic() - start
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"serve not ready after {timeout} s:\n{self.stdout}\n{self.stderr[-3000:]}")

    def request(self, method: str, path: str, body: bytes | dict | list | None = None,
                headers: dict | None = None) -> tuple[int, dict[str, str], bytes]:
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def predict(self, body: bytes | dict | list) -> tuple[int, dict]:
        status, _, content = self.request("POST", "/predict", body)
        return status, json.loads(content)

    def stop(self, sig: int = signal.SIGTERM, group: bool = False, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                for pid in descendants(self.proc.pid) | {self.proc.pid}:
                    os.kill(pid, signal.SIGKILL)
                self.proc.wait()
                raise AssertionError(f"serve did not stop within {timeout} s of signal {sig}") from None
        return self.proc.returncode


def assert_stops_cleanly(serve: ServeProcess, sig: int, group: bool = False) -> None:
    """``sig`` ends the server with status 128 + sig, no process of it left running, its port free, no traceback."""
    processes = descendants(serve.proc.pid)
    assert len(processes) >= 4, processes  # inference workers, HTTP processes, LitServe's manager, ...
    assert serve.stop(sig, group=group) == 128 + sig, serve.stderr[-3000:]
    deadline = time.monotonic() + 5  # the last ones exit once their parent has: give them a moment
    while (left := [pid for pid in processes if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes left behind: {left}"
    assert port_is_free(int(serve.port))
    assert "Traceback" not in serve.stderr, serve.stderr[-3000:]
    assert serve.stdout.rstrip().endswith("stopped")
