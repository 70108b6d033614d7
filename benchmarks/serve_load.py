"""A bounded load test of `aigc serve` on loopback: C concurrent chat clients, R requests each (closed loop:
a client sends its next request when its answer arrives), against a server that merges requests into
shared batched calls (the default) and one that runs each alone (`--merge-outputs 1`), in one run.

    python -m benchmarks.serve_load [--clients 16] [--requests 3] [--max-tokens 32] [--model default]
                                    [--json FILE]

Reports throughput (requests/s, completion tokens/s) and latency (p50, p99) per mode, and whether every
answer was the same in both modes (it must be: each request's seed is its own).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

TOPICS = (
    "the sea",
    "a door",
    "glass",
    "rain",
    "a lighthouse",
    "winter",
    "bread",
    "a violin",
    "snow",
    "a clock",
    "the moon",
    "a garden",
    "copper",
    "a train",
    "salt",
    "a kite",
)


@contextmanager
def serving(data: Path, merge_outputs: int):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(data.parent / f"serve-{merge_outputs}.log", "wb")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "aigc"),
            "serve",
            "--port",
            str(port),
            "--data",
            str(data),
            "--merge-outputs",
            str(merge_outputs),
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(f"{url}/health", timeout=1)
            break
        except httpx.HTTPError:
            if process.poll() is not None:
                raise SystemExit(Path(log.name).read_text()) from None  # the server's log says why, not httpx
            time.sleep(0.2)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def ask(url: str, client: int, request: int, model: str, max_tokens: int) -> tuple[float, int, str]:
    topic = TOPICS[(client + request) % len(TOPICS)]
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Write one sentence about {topic}."}],
        "max_tokens": max_tokens,
        "seed": 1000 * client + request,
        "temperature": 0.8,
    }
    start = time.perf_counter()
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=3600).raise_for_status().json()
    return time.perf_counter() - start, answer["usage"]["completion_tokens"], answer["choices"][0]["message"]["content"]


def load(url: str, clients: int, requests: int, model: str, max_tokens: int) -> dict:
    ask(url, 99, 99, model, 4)  # warm-up: the model loads once, outside the measurement
    results: dict[tuple[int, int], tuple[float, int, str]] = {}

    def client(c: int) -> None:
        for r in range(requests):
            results[c, r] = ask(url, c, r, model, max_tokens)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    latencies = sorted(seconds for seconds, _, _ in results.values())
    tokens = sum(count for _, count, _ in results.values())
    return {
        "requests": len(results),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(results) / wall, 3),
        "tokens_per_s": round(tokens / wall, 1),
        "p50_s": round(statistics.median(latencies), 2),
        "p99_s": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2),
        "texts": {f"{c}-{r}": text for (c, r), (_, _, text) in sorted(results.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=3, help="per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--model", default="default", help="an id from /v1/models (default: the embedded SmolLM2)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, merge in (("merged", 16), ("one at a time", 1)):
            with serving(Path(tmp) / f"data-{merge}", merge) as url:
                rows[mode] = load(url, args.clients, args.requests, args.model, args.max_tokens)
            print(f"{mode}: {json.dumps({k: v for k, v in rows[mode].items() if k != 'texts'})}", flush=True)
    same = rows["merged"].pop("texts") == rows["one at a time"].pop("texts")
    speedup = rows["merged"]["tokens_per_s"] / rows["one at a time"]["tokens_per_s"]
    print(f"\n{args.clients} clients x {args.requests} requests, {args.max_tokens} tokens each, model {args.model}")
    print("| mode | requests | wall | requests/s | tokens/s | p50 | p99 |\n|---|---|---|---|---|---|---|")
    for mode, row in rows.items():
        print(
            f"| {mode} | {row['requests']} | {row['wall_s']} s | {row['requests_per_s']} | {row['tokens_per_s']} | "
            f"{row['p50_s']} s | {row['p99_s']} s |"
        )
    print(f"\nmerged / one at a time: {speedup:.2f}x tokens/s; same answers in both modes: {'yes' if same else 'NO'}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": vars(args) | {"json": str(args.json)},
                    "modes": rows,
                    "speedup": round(speedup, 2),
                    "same_answers": same,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
