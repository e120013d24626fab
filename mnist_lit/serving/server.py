"""``python -m mnist_lit.cli serve --ckpt CKPT``: an HTTP prediction API and a draw-a-digit page, on LitServe.

``POST /predict`` takes ``{"image": "<base64 image file>"}`` (a photo, a scan or a canvas, brought to MNIST's form by
:func:`mnist_lit.data.preprocess.load_mnist`, exactly as ``predict-images`` does) or ``{"pixels": 28×28 of 0–255}``
(MNIST-like already: used as they are) and answers the digit, its probability, the top 3, all ten probabilities and the
28×28 image the network saw. An image that does not read as a digit (the checkpoint's rule, ``--threshold`` or the
request's ``threshold``: ``mnist_lit.models.rejection``) is an answer like the others, marked ``"is_digit": false``,
with its score. ``GET /ui/`` is the drawing page; ``GET /health`` is 200 once every worker is ready.

Where the work happens, and why:

* The HTTP processes validate each request with :class:`PredictRequest` and decode its image there. LitServe batches
  requests before ``decode_request`` runs, and an exception in a batch fails every request in it; validated up front,
  a bad request gets its own 4xx (one line of JSON) and never reaches a batch.
* The inference workers (LitServe's, each loading the checkpoint weights-only in ``setup``) run the network on
  batches formed across clients (``max_batch_size``/``batch_timeout``); torch's threads are split between them.

LitServe starts its workers with ``spawn``, and a spawned process re-imports the main module: ``mnist_lit.cli``
imports nothing heavy at the top for that reason.
"""

import argparse
import base64
import binascii
import ctypes
import io
import os
import signal
import socket
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from importlib.resources import files
from typing import Annotated

import litserve as ls
import numpy as np
import torch
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mnist_lit.common.errors import UserError, one_line, run_reporting_errors
from mnist_lit.data.preprocess import BlankImageError, ImageError, load_mnist
from mnist_lit.inference.predict_images import positive_int, score_threshold
from mnist_lit.inference.predictor import Predictor, resolve_device
from mnist_lit.models.rejection import Rejection

PROG = "python -m mnist_lit.cli serve"
HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # the addresses LitServe binds to: this machine only, or every interface
MAX_PAYLOAD = 10 * 1024 * 1024  # bytes of request body: a phone photo, base64-encoded, fits
MAX_PIXELS = 25_000_000  # a 24-megapixel photo; more is refused before decoding (PIL's own limit is 89 million)
UI_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
            "style.css": "text/css; charset=utf-8"}
# The page may talk to this server only: no CDN, no fonts, no other origin (and the browser enforces it).
UI_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; base-uri 'none'; "
                                         "form-action 'none'; frame-ancestors 'none'",
              "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}

Byte = Annotated[int, Field(strict=True, ge=0, le=255)]  # a JSON integer: no strings or booleans read as numbers
Threshold = Annotated[float, Field(strict=True, ge=0, le=1, allow_inf_nan=False)]  # a JSON number, 0 to 1
Pixels = Annotated[list[Annotated[list[Byte], Field(min_length=28, max_length=28)]],
                   Field(min_length=28, max_length=28)]


@dataclass
class Digit:
    """What the network will see: uint8 (28, 28) pixels, white on black, or why there is nothing to see; and the
    request's own threshold, if it gave one."""

    pixels: np.ndarray | None
    blank: str | None = None
    threshold: float | None = None


def decode_image(text: str) -> Digit:
    """Base64 (or a ``data:`` URL, as ``canvas.toDataURL()`` gives) → the digit, through predict-images' own path."""
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise PydanticCustomError("image", "image: a data: URL must be base64-encoded")
    try:
        data = base64.b64decode(text, validate=True)
    except binascii.Error as err:
        raise PydanticCustomError("image", "image: not valid base64 ({reason})", {"reason": str(err)}) from None
    try:
        return Digit(load_mnist(io.BytesIO(data), name="image").numpy())
    except BlankImageError as err:  # nothing drawn yet: an answer, not an error
        return Digit(None, str(err).removeprefix("image: "))
    except ImageError as err:
        raise PydanticCustomError("image", "{reason}", {"reason": one_line(err)}) from None


class PredictRequest(BaseModel):
    """The body of ``POST /predict``: exactly one of ``image`` and ``pixels``."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(None, description="An image file (PNG, JPEG, BMP, GIF, TIFF, WebP), base64-encoded or as "
                                                "a data: URL: a photo, scan or drawing of one digit, any size; it is "
                                                "preprocessed exactly as predict-images does.")
    pixels: Pixels | None = Field(None, description="28 rows of 28 integers 0–255, white digit on black, centred as "
                                                    "in MNIST; used as they are.")
    threshold: Threshold | None = Field(None, description="Optional: an image whose score is below this (0–1) is not "
                                                          "a digit, in place of the server's threshold (the "
                                                          "checkpoint's, or serve --threshold); 0 reads every image "
                                                          "as a digit.")
    _digit: Digit = PrivateAttr()

    @model_validator(mode="after")
    def _decode(self) -> "PredictRequest":
        if (self.image is None) == (self.pixels is None):
            raise PydanticCustomError("input", 'give exactly one of "image" (a base64 image file) and "pixels" '
                                               '(28×28 integers 0–255)')
        self._digit = Digit(np.array(self.pixels, np.uint8)) if self.pixels is not None else decode_image(self.image)
        self._digit.threshold = self.threshold
        return self

    @property
    def digit(self) -> Digit:
        return self._digit


class Prediction(BaseModel):
    """The answer of ``POST /predict``. For a blank image ``digit`` and the rest are null and ``reason`` says why; an
    image that does not read as a digit has ``is_digit`` false and the ``reason``, and the rest as any other."""

    digit: int | None = Field(description="the most probable digit (check is_digit); null when the image is blank")
    probability: float | None = Field(description="its probability")
    is_digit: bool = Field(description="whether the image reads as a digit: false when its score is below the "
                                       "threshold, and for a blank image")
    score: float | None = Field(description="the score the threshold applies to (the top probability); higher reads "
                                            "more like a digit; null when the image is blank")
    top3: list[tuple[int, float]] = Field(description="[digit, probability] of the three most probable, best first")
    probabilities: list[float] | None = Field(description="the probability of each digit 0–9")
    seen: str | None = Field(description="the 28×28 image the network saw (white on black), base64 PNG")
    reason: str | None = Field(None, description="why the image does not read as a digit: blank, or its score below "
                                                 "the threshold")
    batch_size: int = Field(description="how many requests were predicted together, across clients")


@dataclass
class Answer:
    digit: Digit
    probabilities: list[float] | None
    batch_size: int
    score: float | None = None
    is_digit: bool = False
    rule: Rejection | None = None  # the rule that applied, if any


def png_base64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class DigitAPI(ls.LitAPI):
    """The inference worker's side: batches of already-decoded digits through the checkpoint's network."""

    def __init__(self, ckpt: str, threads: int, max_batch_size: int, batch_timeout: float,
                 threshold: float | None = None):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        self.ckpt, self.threads, self.threshold = ckpt, threads, threshold

    def setup(self, device: str) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the whole group: the server stops its workers
        end_with_parent()
        torch.set_num_threads(self.threads)
        self.predictor = Predictor.from_checkpoint(self.ckpt, device, self.threshold)  # weights only: no code runs

    def decode_request(self, request: PredictRequest) -> Digit:
        return request.digit

    def batch(self, digits: list[Digit]) -> list[Digit]:
        return digits  # blank ones have no pixels: predict stacks the others

    def predict(self, digits: list[Digit] | Digit) -> list[Answer] | Answer:
        if isinstance(digits, Digit):  # --max-batch-size 1: LitServe passes the requests one by one
            return self.predict([digits])[0]
        images = [d.pixels for d in digits if d.pixels is not None]
        probs = iter(self.predictor.probabilities(torch.from_numpy(np.stack(images))).float().cpu()
                     if images else [])
        answers = []
        for d in digits:
            if d.pixels is None:
                answers.append(Answer(d, None, len(digits)))
                continue
            row = next(probs)[None]
            scores, is_digit = self.predictor.judge(row, d.threshold)  # each request may bring its own threshold
            answers.append(Answer(d, row[0].tolist(), len(digits), float(scores[0]), bool(is_digit[0]),
                                  self.predictor.rule(d.threshold)))
        return answers

    def unbatch(self, answers: list[Answer]) -> list[Answer]:
        return answers

    def encode_response(self, answer: Answer) -> Prediction:
        probs = answer.probabilities
        if probs is None:
            return Prediction(digit=None, probability=None, is_digit=False, score=None, top3=[], probabilities=None,
                              seen=None, reason=answer.digit.blank, batch_size=answer.batch_size)
        best = sorted(range(10), key=lambda d: -probs[d])[:3]
        reason = None if answer.is_digit else (f"not a digit: its score {answer.score:.4f} is below the threshold "
                                               f"{answer.rule.threshold:.4f}")
        return Prediction(digit=best[0], probability=probs[best[0]], is_digit=answer.is_digit, score=answer.score,
                          top3=[(d, probs[d]) for d in best], probabilities=probs,
                          seen=png_base64(answer.digit.pixels), reason=reason, batch_size=answer.batch_size)


# ------------------------------------------------------------------------------------------------- the server ---

def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's list of validation errors → one line: the first error, where it is, and how many more there are."""
    errors = exc.errors()
    first = errors[0] if errors else {"type": "", "loc": (), "msg": "invalid request"}
    if first["type"] == "json_invalid":
        return _error(400, f"malformed JSON: {first.get('ctx', {}).get('error', first['msg'])}")
    where = ".".join(str(part) for part in first["loc"] if part != "body")
    message = first["msg"] if first["type"] in ("image", "input") or not where else f"{where}: {first['msg']}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return _error(413 if "image too large" in message else 422, message + more)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 413:  # LitServe's MaxSizeMiddleware says only "Payload too large"
        return _error(413, f"request body larger than the {MAX_PAYLOAD // 2**20} MiB limit")
    return _error(exc.status_code, str(exc.detail))


def _ui_route(content: bytes, media_type: str):
    async def page() -> Response:
        return Response(content, media_type=media_type, headers=UI_HEADERS)
    return page


def build_server(api: DigitAPI, workers: int, device: torch.device, metadata: dict) -> ls.LitServer:
    """LitServe's server for ``api``, plus one-line JSON errors and the page (read once from the package here: no
    route reads a file named by the client)."""
    devices = ("auto" if device.type == "cpu" else 1 if device.index is None else [device.index])
    server = ls.LitServer(api, accelerator=device.type, devices=devices, workers_per_device=workers,
                          max_payload_size=MAX_PAYLOAD, model_metadata=metadata)
    server.uvicorn_graceful_timeout = 5  # seconds in-flight requests get to finish at shutdown (LitServe's: 30)
    app = server.app
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    ui = files("mnist_lit.serving") / "ui"
    for name, media_type in UI_FILES.items():
        app.add_api_route(f"/ui/{name}", _ui_route((ui / name).read_bytes(), media_type), methods=["GET"],
                          include_in_schema=False)
    app.add_api_route("/ui/", _ui_route((ui / "index.html").read_bytes(), UI_FILES["index.html"]), methods=["GET"],
                      include_in_schema=False)
    app.add_api_route("/ui", lambda: RedirectResponse("/ui/"), methods=["GET"], include_in_schema=False)
    return server


# ---------------------------------------------------------------------------------------------------- the CLI ---

def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1 second, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1024 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 1024 to 65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Serve a checkpoint over HTTP: POST /predict (JSON) and a drawing page at /ui/.",
        epilog="Stop with Ctrl+C or SIGTERM. Exit status: 2 bad usage or checkpoint; 130/143 after SIGINT/SIGTERM.")
    parser.add_argument("--ckpt", required=True, help="a .ckpt written by `fit` (read weights-only)")
    parser.add_argument("--host", default="127.0.0.1", choices=HOSTS,
                        help="127.0.0.1 (default): this machine only; 0.0.0.0 or '::': every network interface, "
                             "so anyone who can reach this machine can use the API (there is no authentication)")
    parser.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="inference processes, each with the network loaded, sharing the CPU cores the HTTP "
                             "processes leave (default 1)")
    parser.add_argument("--api-servers", type=positive_int, default=min(8, os.cpu_count() or 1),
                        help="HTTP processes, which parse the requests and decode their images: the CPU-heavy part "
                             "(default: one per CPU core, at most 8)")
    parser.add_argument("--max-batch-size", type=positive_int, default=32,
                        help="requests predicted together at most (default 32)")
    parser.add_argument("--batch-timeout", type=_seconds, default=0.005,
                        help="seconds a worker waits for a batch to fill (default 0.005)")
    parser.add_argument("--threshold", type=score_threshold, metavar="T",
                        help="an image whose score (its top probability) is below T is answered as not a digit; "
                             "replaces the checkpoint's threshold, or gives one to a checkpoint that has none (which "
                             "otherwise reads every image as a digit); a request's own \"threshold\" replaces it")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    return parser


def _check_port(host: str, port: int) -> None:
    """Fail in one line before any worker starts, rather than with uvicorn's log after they did."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT does not count
        try:
            sock.bind((host, port))
        except OSError as err:
            raise UserError(f"--port {port}: cannot listen on {host}:{port} ({err.strerror or err})") from None


def _announce_when_ready(url: str, local: str, network: str) -> None:
    """Say where the page is once /health answers 200, i.e. once every worker has loaded the network."""
    while True:
        try:
            with urllib.request.urlopen(f"{local}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        time.sleep(0.1)
    print(f"ready: {network} answers POST {url}/predict; draw a digit at {url}/ui/ (Ctrl+C stops)", flush=True)


def end_with_parent() -> None:
    """Linux: when the server's main process dies, even by SIGKILL, the kernel sends SIGTERM to this process."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def stop_on_signals() -> list[int]:
    """The one adapter to a LitServe gap (litserve 0.2.19; docs/design.md): its docs say SIGTERM shuts the server
    down gracefully, but ``LitServer.run`` installs no SIGTERM handler and stops cleanly, terminating its HTTP and
    worker processes, only on a ``KeyboardInterrupt``. SIGTERM (and SIGINT) raise that KeyboardInterrupt, once: a
    second signal must not cut the shutdown short and leave workers behind. Returns the list the signal that stopped
    the server is appended to. tests/test_serve.py checks that LitServe still has the gap."""
    stopped_by: list[int] = []

    def stop(signum: int, frame) -> None:
        if not stopped_by:
            stopped_by.append(signum)
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return stopped_by


def _forked_child() -> None:
    """LitServe's forked processes (HTTP, manager): uvicorn's own signal handling, and no orphans."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    end_with_parent()


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    torch.set_num_threads(1)  # this process only checks the file: no thread pool to carry into forked HTTP processes
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # each image is decoded in memory while its client waits: bound that memory
    predictor = Predictor.from_checkpoint(args.ckpt, threshold=args.threshold)  # one line here, not one per worker
    _check_port(args.host, args.port)
    # The HTTP processes decode the images; the workers share the cores left (at least one thread each): OpenMP
    # threads that wait for work spin, and would take the cores the decoding needs.
    spare = (os.cpu_count() or 1) - args.api_servers
    threads = max(1, spare // args.workers) if device.type == "cpu" else 1
    api = DigitAPI(os.path.abspath(args.ckpt), threads, args.max_batch_size, args.batch_timeout, args.threshold)
    metadata = {"checkpoint": os.path.basename(args.ckpt), "network": predictor.net_name,
                "normalization": predictor.normalization}
    server = build_server(api, args.workers, device, metadata)

    stopped_by = stop_on_signals()
    os.register_at_fork(after_in_child=_forked_child)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    local = "http://[::1]" if args.host == "::" else "http://127.0.0.1"
    print(f"loading {predictor.net_name} from {args.ckpt} into {args.workers} worker(s) on {device} ...", flush=True)
    threading.Thread(target=_announce_when_ready, daemon=True,
                     args=(f"http://{shown}:{args.port}", f"{local}:{args.port}", predictor.net_name)).start()
    try:  # LitServe catches the KeyboardInterrupt once running and stops every process it started
        server.run(host=args.host, port=args.port, num_api_servers=args.api_servers,
                   log_level="warning", generate_client_file=False)
    except KeyboardInterrupt:  # during start-up, before LitServe catches it; its workers go with us (PDEATHSIG)
        pass
    print("stopped", flush=True)
    return 128 + stopped_by[0] if stopped_by else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_errors(lambda: run(args))

