"""A real `aigc serve` for tests: a subprocess on a free loopback port, stopped (SIGTERM) when the block ends."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

AIGC = shutil.which("aigc", path=str(Path(sys.executable).parent)) or "aigc"
TOKEN = "team-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server(data: Path, models: Path, *extra: str, port: int | None = None, env: dict | None = None):
    """Yields (url, process). The server's stderr goes to a file beside its data (a pipe nobody reads would
    fill up and stall it), and is the error when it does not come up."""
    port = port or free_port()
    data.parent.mkdir(parents=True, exist_ok=True)
    log = open(data.parent / f"{data.name}-serve-{port}.log", "ab")
    process = subprocess.Popen(
        [AIGC, "serve", "--port", str(port), "--data", str(data), "--models", str(models), *extra],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                raise AssertionError(Path(log.name).read_text(errors="replace")[-4000:]) from None
            time.sleep(0.2)
    try:
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


def served_models(directory: Path, tiny_gpt2: Path | None = None, tiny_dcgan: Path | None = None) -> Path:
    """A server's --models directory holding the tiny models under the names the tests ask for."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, target in (("tiny-gpt2", tiny_gpt2), ("tiny-gan.pth", tiny_dcgan)):
        if target is not None:
            (directory / name).symlink_to(target)
    return directory


def wait_done(url: str, job_id: str, timeout: float = 300, headers: dict | None = None) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers).json()
        if job["state"] not in ("pending", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(job)
