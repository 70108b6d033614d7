"""`python -m benchmarks --suite cpu|gpu [--quick] [--json FILE]`: stock vs aigc, median seconds per call (the CPU's
capabilities recorded with every record)."""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import torch

from aigc.errors import AIGCError
from aigc.runtime.devices import DeviceManager

from . import edits, music, sd, text_cpu, upscale, workloads


def suite(name: str, quick: bool) -> list[tuple[str, object]]:
    manager = DeviceManager("cuda" if name == "gpu" else "cpu")
    if name == "gpu":
        steps, tokens, seconds = (10, 64, 2.0) if quick else (50, 256, 10.0)
        return [
            (f"sd1.5 512px {steps} steps b1", lambda: sd.sd15(manager, 1, steps)),
            (f"sd1.5 512px {steps} steps b8", lambda: sd.sd15(manager, 8, steps)),
            ("sd turbo-style 1 step b1", lambda: sd.sd15(manager, 1, 1, turbo=True)),
            (f"sd1.5 inpaint 512px {steps} steps b1", lambda: edits.inpaint(manager, 1, steps)),
            (f"sd1.5 + controlnet canny 512px {steps} steps b1", lambda: edits.controlnet_canny(manager, 1, steps)),
            (f"gpt2-124m {tokens} tok b1", lambda: workloads.gpt2(manager, 1, tokens)),
            (f"gpt2-124m {tokens} tok b1 compile", lambda: workloads.gpt2(manager, 1, tokens, compile=True)),
            (f"gpt2-124m {tokens} tok b32", lambda: workloads.gpt2(manager, 32, tokens)),
            (f"gpt2-124m {tokens} tok b32 compile", lambda: workloads.gpt2(manager, 32, tokens, compile=True)),
            (f"musicgen-small {seconds:g} s", lambda: music.musicgen(manager, seconds)),
            ("dcgan b256", lambda: workloads.dcgan(manager, 256)),
            ("esrgan x4plus 512px -> 2048px", lambda: upscale.esrgan(manager, 512)),
            ("compact x4v3 512px -> 2048px", lambda: upscale.esrgan(manager, 512, compact=True)),
            ("scorer 256 texts", lambda: workloads.scorer(manager, 256)),
        ]
    tokens = 16 if quick else 64
    return [
        (f"gpt2-124m {tokens} tok b1", lambda: workloads.gpt2(manager, 1, tokens)),
        (f"gpt2-124m {tokens} tok b1 compile", lambda: workloads.gpt2(manager, 1, tokens, compile=True)),
        (f"gpt2-124m {tokens} tok b8", lambda: workloads.gpt2(manager, 8, tokens)),
        ("dcgan b256", lambda: workloads.dcgan(manager, 256)),
        ("compact x4v3 128px -> 512px", lambda: upscale.esrgan(manager, 128, compact=True)),
        ("smollm2 load (gguf vs cache)", lambda: workloads.smollm2_load(manager)),
        (f"smollm2-135m {tokens} tok b1 fp32 vs default", lambda: text_cpu.tokens(manager, 1, tokens)),
        (f"smollm2-135m {tokens} tok b8 fp32 vs default", lambda: text_cpu.tokens(manager, 8, tokens)),
        ("smollm2 first token b1 fp32 vs default", lambda: text_cpu.first_token(manager)),
        ("smollm2 first call, fresh process", text_cpu.first_call),
        ("smollm2 quality (held-out text)", lambda: text_cpu.quality(manager)),
        (f"smollm2-135m {tokens} tok b1 llama.cpp", lambda: text_cpu.llama_cpp(manager, 1, tokens)),
        (f"smollm2-135m {tokens} tok b8 llama.cpp", lambda: text_cpu.llama_cpp(manager, 8, tokens)),
        ("speech ~7 s of audio", lambda: workloads.speech(manager)),
        ("scorer 64 texts", lambda: workloads.scorer(manager, 64)),
    ]


def median_seconds(fn, reps: int) -> tuple[float, object]:
    fn()  # warm-up: first-call costs (loading, caches) are not what is being compared
    times, out = [], None
    for _ in range(reps):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


base_keys = {"workload", "device", "stock_s", "aigc_s", "speedup", "peak_mem_mb", "matches_stock", "cpu"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--suite", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer tokens and repetitions")
    parser.add_argument("--json", metavar="FILE", help="write the records as a JSON list")
    parser.add_argument("--only", metavar="TEXT", help="run only the workloads whose name contains TEXT")
    args = parser.parse_args(argv)
    if args.suite == "gpu" and not torch.cuda.is_available():
        print("--suite gpu needs CUDA; this torch sees none. Run --suite cpu here.", file=sys.stderr)
        return 2
    reps = 2 if args.quick else 5
    device = torch.cuda.get_device_name() if args.suite == "gpu" else "cpu"
    records = []
    cpu = text_cpu.cpu_capabilities()
    print("cpu:", json.dumps(cpu))
    print(f"{'workload':32} {'stock s':>9} {'aigc s':>9} {'speedup':>8}  matches")
    for name, build in suite(args.suite, args.quick):
        if args.only and args.only not in name:
            continue
        if args.suite == "gpu":
            torch.cuda.reset_peak_memory_stats()
        try:
            stock_fn, aigc_fn, compare, *more = build()
        except (AIGCError, text_cpu.Skipped) as error:  # e.g. a model pack or llama.cpp not installed here
            print(f"{name:32} skipped: {error}", flush=True)
            continue
        stock_s, stock_out = median_seconds(stock_fn, reps) if stock_fn else (None, None)
        aigc_s, aigc_out = median_seconds(aigc_fn, reps)
        record = {
            "workload": name,
            "device": device,
            "stock_s": stock_s,
            "aigc_s": aigc_s,
            "speedup": stock_s / aigc_s if stock_s else None,
            "peak_mem_mb": (
                torch.cuda.max_memory_allocated()
                if args.suite == "gpu"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            )
            / 1024**2,
            "matches_stock": compare(stock_out, aigc_out) if compare else None,
            "cpu": cpu,
        }
        if more and more[0]:  # a workload's own figures (tokens/s, ceilings, quality)
            record.update(more[0](stock_out, aigc_out, stock_s, aigc_s))
        records.append(record)
        fmt = lambda v: f"{v:9.3f}" if v is not None else f"{'-':>9}"  # noqa: E731
        speed = f"{record['speedup']:7.2f}x" if record["speedup"] else f"{'-':>8}"
        print(f"{name:32} {fmt(stock_s)} {fmt(aigc_s)} {speed}  {record['matches_stock']}", flush=True)
        if more and more[0]:
            print(f"{'':32} {json.dumps({k: v for k, v in record.items() if k not in base_keys})}", flush=True)
        if args.json:  # after every workload, so a run cut short keeps what it measured
            with open(args.json, "w") as handle:
                json.dump(records, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
