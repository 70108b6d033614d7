"""Offline, hermetic test set-up: no Hub, no network, a private aigc cache, tiny models built once per session."""

from __future__ import annotations

import os
import socket
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["AIGC_CACHE"] = tempfile.mkdtemp(prefix="aigc-test-cache-")  # hermetic: never the user's cache
os.environ.pop("AIGC_DEVICE", None)
os.environ.pop("AIGC_DTYPE", None)

import pytest  # noqa: E402

_connect = socket.socket.connect


def _loopback_only(sock: socket.socket, address) -> None:
    """An accidental Hub call must fail loudly, not hang or download."""
    if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
        raise RuntimeError(f"tests must not use the network (tried to connect to {address})")
    return _connect(sock, address)


socket.socket.connect = _loopback_only


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def build_tiny_gpt2(path, *, seed: int = 0, with_tokenizer: bool = True, n_positions: int = 128):
    """A randomly initialised 2-layer GPT-2 with the real GPT-2 vocabulary, saved like a Hub checkpoint."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from aigc.models import gpt2_tokenizer_dir

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=50257, n_positions=n_positions, n_embd=32, n_layer=2, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(path)
    if with_tokenizer:
        AutoTokenizer.from_pretrained(gpt2_tokenizer_dir()).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> str:
    return str(build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2")))


@pytest.fixture(scope="session")
def tiny_gpt2_other(tmp_path_factory) -> str:
    return str(build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2-b"), seed=1))


@pytest.fixture(scope="session")
def tiny_gpt2_bare(tmp_path_factory) -> str:
    """A GPT-2 checkpoint without tokenizer files, as many fine-tunes are shared."""
    return str(build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2-bare"), seed=2, with_tokenizer=False))


@pytest.fixture
def manager():
    from aigc.devices import DeviceManager

    return DeviceManager("cpu")
