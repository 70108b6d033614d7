"""The benchmark harness runs, times both sides and checks aigc's output against the stock library's."""

from __future__ import annotations

import pytest

from benchmarks import workloads
from benchmarks.__main__ import median_seconds


def test_gpt2_workload_matches_stock_generate_token_for_token(manager):
    stock, ours, same = workloads.gpt2(manager, batch=2, new_tokens=4)
    seconds, stock_out = median_seconds(stock, reps=1)
    _, our_out = median_seconds(ours, reps=1)
    assert seconds > 0 and same(stock_out, our_out)


@pytest.mark.pack
def test_dcgan_workload_matches_the_plain_module(manager):
    stock, ours, same = workloads.dcgan(manager, batch=8)
    assert same(stock(), ours())


def test_gpu_suite_refuses_without_cuda(capsys):
    import torch

    from benchmarks.__main__ import main

    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    assert main(["--suite", "gpu"]) == 2
    assert "needs CUDA" in capsys.readouterr().err


def test_the_llama_cpp_twin_is_skipped_saying_why_without_llama_cpp_python(monkeypatch):
    import sys

    from benchmarks.text_cpu import LlamaCpp, Skipped

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if llama-cpp-python were not installed
    with pytest.raises(Skipped, match="llama-cpp-python is not installed .*builds from source"):
        LlamaCpp(1)
