"""The causal-LM generator on tiny random GPT-2 models: determinism, batching, sampling knobs, stop, stream."""

from __future__ import annotations

import shutil

import pytest
import torch

import aigc

PROMPTS = ["The sea", "A lighthouse keeper finds a door in the sea and", "Once"]


def gen(prompt, model, manager, **kw):
    return aigc.generate(
        "text", prompt, model=model, manager=manager, max_new_tokens=kw.pop("max_new_tokens", 12), **kw
    )


def test_same_seed_same_text_and_new_seed_new_text(tiny_gpt2, manager):
    first = gen("The sea", tiny_gpt2, manager, seed=7)[0]
    again = gen("The sea", tiny_gpt2, manager, seed=7)[0]
    other = gen("The sea", tiny_gpt2, manager, seed=8)[0]
    assert isinstance(first.data, str) and first.data
    assert first.data == again.data
    assert first.data != other.data
    assert first.seed == 7 and first.info["new_tokens"] == 12 and first.info["finish_reason"] == "length"


def test_an_output_is_the_same_alone_or_in_a_left_padded_batch(tiny_gpt2, manager):
    seeds = [11, 12, 13, 14, 15, 16]
    batched = gen(PROMPTS, tiny_gpt2, manager, n=2, seed=seeds)
    assert [a.prompt for a in batched] == [p for p in PROMPTS for _ in range(2)]
    assert [a.seed for a in batched] == seeds
    for asset in batched:
        alone = gen(asset.prompt, tiny_gpt2, manager, seed=asset.seed)[0]
        assert alone.data == asset.data
    one_by_one = gen(PROMPTS, tiny_gpt2, manager, n=2, seed=seeds, batch_size=1)
    assert [a.data for a in one_by_one] == [a.data for a in batched]


def _hf_greedy(model_dir, prompt, max_new_tokens, **kw):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(
        **ids,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens,
        pad_token_id=tok.eos_token_id,
        **kw,
    )
    return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_decoding_matches_transformers_generate(tiny_gpt2, manager, penalty):
    """Our decoding loop (left padding, positions, KV cache, repetition penalty) against stock generate."""
    ours = gen(PROMPTS, tiny_gpt2, manager, seed=0, temperature=0.0, repetition_penalty=penalty, max_new_tokens=10)
    for asset, prompt in zip(ours, PROMPTS, strict=True):
        assert asset.data == _hf_greedy(tiny_gpt2, prompt, 10, repetition_penalty=penalty)


def test_top_k_one_is_greedy_whatever_the_seed(tiny_gpt2, manager):
    greedy = gen("The sea", tiny_gpt2, manager, temperature=0.0, seed=1)[0].data
    for seed in (1, 2, 3):
        assert gen("The sea", tiny_gpt2, manager, top_k=1, seed=seed)[0].data == greedy


def test_low_temperature_concentrates_samples(tiny_gpt2, manager):
    """A near-zero temperature makes different seeds agree; a high one makes them differ."""
    cold = {gen("The sea", tiny_gpt2, manager, temperature=1e-4, top_k=0, top_p=1.0, seed=s)[0].data for s in range(4)}
    hot = {gen("The sea", tiny_gpt2, manager, temperature=2.0, top_k=0, top_p=1.0, seed=s)[0].data for s in range(4)}
    assert len(cold) == 1 and len(hot) == 4


def test_stop_string_cuts_the_output(tiny_gpt2, manager):
    full = gen("The sea", tiny_gpt2, manager, temperature=0.0, max_new_tokens=16)[0].data
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    cut = gen("The sea", tiny_gpt2, manager, temperature=0.0, max_new_tokens=16, stop=[stop, "never-there"])[0]
    assert cut.data == full[: full.index(stop)]
    assert cut.info["finish_reason"] == "stop"


@pytest.mark.parametrize("use_stop", [False, True])
def test_streamed_pieces_add_up_to_the_output(tiny_gpt2, manager, use_stop):
    full = gen("The sea", tiny_gpt2, manager, seed=5, max_new_tokens=16)[0].data
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    params = {"stop": [stop]} if use_stop else {}
    pieces: list[str] = []
    asset = gen("The sea", tiny_gpt2, manager, seed=5, max_new_tokens=16, streamer=pieces.append, **params)[0]
    assert len(pieces) > 1
    assert "".join(pieces) == asset.data
    assert asset.data == (full[: full.index(stop)] if use_stop else full)
    assert "streamer" not in asset.params


def test_too_many_or_too_long_stop_strings_are_refused_before_loading(tiny_gpt2):
    from aigc.runtime.devices import DeviceManager

    fresh = DeviceManager("cpu")
    with pytest.raises(
        aigc.ConfigError,
        match=r"number of strings in stop is 65, over the limit of 64.*"
        r"AIGC_LIMIT_STOP_STRINGS=65",
    ):
        gen("The sea", tiny_gpt2, fresh, stop=[f"stop {i}" for i in range(65)])
    with pytest.raises(aigc.ConfigError, match=r"stop's length in characters is 1,001.*AIGC_LIMIT_STOP_CHARS"):
        gen("The sea", tiny_gpt2, fresh, stop=["x" * 1001])
    assert not fresh.stats()["models"]  # refused before any model loaded
    with aigc.limits.set(stop_strings=65):
        assert gen("The sea", tiny_gpt2, fresh, stop=[f"stop {i}" for i in range(65)], max_new_tokens=2)[0].data


class CountingList(list):
    """A list that counts the items read out of it: how often decoding walks the stop strings."""

    read = 0

    def __iter__(self):
        for item in super().__iter__():
            self.read += 1
            yield item


def test_stop_matching_does_not_walk_the_stop_strings_per_token(tiny_gpt2, manager):
    """Each token's text goes through one automaton built from the stops once per call: per token, nothing is
    done per stop string (it was a scan of every stop string per token: 1,000,000 of them took 24.8 s)."""
    from aigc.generators.text.decoding import Settings, decode
    from aigc.generators.text.sampling import Sampling

    gen("The sea", tiny_gpt2, manager, max_new_tokens=1)  # loaded once
    with manager.use(manager.key("causal-lm", tiny_gpt2), lambda: None) as lm:
        prompt = lm.tokenizer.encode("The sea")
        for count in (1, 64, 4096):
            stops = CountingList(f"never {i} here" for i in range(count))
            stops.read = 0
            settings = Settings(40, Sampling(0.0), 1.0, stops, stream=lambda piece: None)
            [(text, info)] = decode(lm, [(prompt, 1)], settings, manager.device, "tiny")
            assert info["new_tokens"] == 40 and info["finish_reason"] == "length"
            assert stops.read == count  # once, to build the automaton; not 40 x count


def test_the_stop_automaton_reads_a_character_in_bounded_work_whatever_the_stops():
    """Aho-Corasick: moves down plus moves back over a text are at most twice its characters, for any stops (here
    ones that make a naive matcher back up a lot: 'aaa...ab')."""
    from aigc.generators.text.decoding import Stops

    class Counting(dict):
        looks = 0

        def __contains__(self, key):
            Counting.looks += 1
            return super().__contains__(key)

        def get(self, key, default=None):
            Counting.looks += 1
            return super().get(key, default)

    text = ("a" * 70 + "c") * 30
    for count in (1, 8, 64, 4096):
        stops = Stops(["a" * (1 + i % 64) + "b" + "a" * (i // 64) for i in range(count)])
        stops.next = Counting(stops.next)
        Counting.looks, state = 0, 0
        for char in text:
            state = stops.step(state, char)
        assert Counting.looks <= 3 * len(text), (count, Counting.looks)


def _first_stop(text, stops):
    """The brute-force reference (what aigc did before the automaton): the earliest start of any stop string."""
    found = [text.find(stop) for stop in stops if stop in text]
    return min(found) if found else None


def _settled(text, stops):
    """Reference: the text up to the first stop, else all but its longest tail that begins a stop string."""
    cut = _first_stop(text, stops)
    if cut is not None:
        return text[:cut]
    held = max((k for stop in stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)
    return text[: len(text) - held]


def test_stop_cuts_match_a_brute_force_reference_on_random_texts():
    import random

    from aigc.generators.text.decoding import Stops, cut_at_stop

    alphabet = "ab \nxé"
    for seed in range(3000):
        rng = random.Random(seed)
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 8))]
        automaton = Stops(stops)
        expected = _first_stop(text, stops)
        assert automaton.cut(text) == expected, (seed, text, stops)
        assert cut_at_stop(text, automaton) == ((text, False) if expected is None else (text[:expected], True))


def test_stops_found_token_by_token_match_the_reference():
    """Token by token through a real tokenizer (multi-byte characters arrive in pieces): a stop string spanning
    tokens is found at the token that completes it, the streamed text never holds what a stop could still cut,
    and the final text is cut before the first stop, as the brute-force reference says."""
    import random

    from transformers import AutoTokenizer

    from aigc.generators.text.decoding import RowText, Stops
    from aigc.runtime.models import gpt2_tokenizer_dir

    tokenizer = AutoTokenizer.from_pretrained(gpt2_tokenizer_dir())
    alphabet = ["a", "b", " ", "\n", "é", "🙂", "the", " sea"]
    for seed in range(400):
        rng = random.Random(seed)
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 6))]
        row = RowText(tokenizer, Stops(stops))
        for token in tokenizer.encode(text):
            found = row.add(token)
            assert found == (_first_stop(row.text, stops) is not None), (seed, text, stops, row.text)
            assert row.settled() == _settled(row.text, stops), (seed, text, stops, row.text)
            if found:
                break
        whole = tokenizer.decode(row.ids, skip_special_tokens=True)
        cut = _first_stop(whole, stops)
        assert row.final() == (whole if cut is None else whole[:cut]), (seed, text, stops)


def test_gpt2_checkpoint_without_tokenizer_uses_the_gpt2_tokenizer_pack(tiny_gpt2_bare, manager):
    asset = aigc.generate(
        "text", "Hello world", backend="gpt2", model=tiny_gpt2_bare, seed=1, max_new_tokens=5, manager=manager
    )[0]
    assert asset.backend == "gpt2" and asset.info["prompt_tokens"] == 2  # "Hello world" -> [15496, 995]


def test_prompt_longer_than_the_context_is_refused(tiny_gpt2, manager):
    with pytest.raises(aigc.ConfigError, match="reads at most 128"):
        gen("word " * 200, tiny_gpt2, manager)


def test_output_stops_at_the_context_limit(tiny_gpt2, manager):
    asset = gen("word " * 120, tiny_gpt2, manager, max_new_tokens=50, seed=0)[0]
    assert asset.info["prompt_tokens"] + asset.info["new_tokens"] == 128
    assert asset.info["finish_reason"] == "length"


def test_the_model_runs_in_eval_mode_and_leaves_autograd_as_it_was(tiny_gpt2, manager):
    gen("The sea", tiny_gpt2, manager, seed=0)
    with manager.use(manager.key("causal-lm", tiny_gpt2), lambda: None) as lm:
        assert lm.model.training is False  # dropout off: sampling depends on the seed alone
        assert lm.model.config._attn_implementation == "sdpa"  # fused attention kernels, not the eager matmuls
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def test_a_hub_id_loads_offline_from_the_hub_cache(tiny_gpt2, manager):
    from conftest import put_in_hub_cache

    put_in_hub_cache("tiny-org/tiny-gpt2", tiny_gpt2)
    by_id = aigc.generate(
        "text", "The sea", backend="gpt2", model="tiny-org/tiny-gpt2", seed=3, manager=manager, max_new_tokens=6
    )[0]
    by_dir = gen("The sea", tiny_gpt2, manager, seed=3, max_new_tokens=6)[0]
    assert by_id.data == by_dir.data and by_id.model == "tiny-org/tiny-gpt2"


def test_a_batch_keeps_decoding_after_its_longest_prompt_reaches_the_context_limit(tiny_gpt2, manager):
    long, short = gen(["word " * 120, "The sea"], tiny_gpt2, manager, max_new_tokens=30, seed=[0, 1])
    assert long.info["prompt_tokens"] + long.info["new_tokens"] == 128 and long.info["finish_reason"] == "length"
    assert short.info["new_tokens"] == 30
    assert short.data == gen("The sea", tiny_gpt2, manager, max_new_tokens=30, seed=1)[0].data


@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile on the CPU needs a C compiler")
def test_compile_gives_the_same_tokens_as_eager_decoding(tiny_gpt2, manager):
    """The static cache + compiled step path (CUDA graphs on a GPU) samples exactly what the eager path does."""
    seeds = [3, 4, 5]
    knobs = {"max_new_tokens": 20, "repetition_penalty": 1.3}
    eager = [a.data for a in gen(PROMPTS, tiny_gpt2, manager, seed=seeds, **knobs)]
    compiled = gen(PROMPTS, tiny_gpt2, manager, seed=seeds, compile=True, **knobs)
    assert [a.data for a in compiled] == eager
    assert "compile" not in compiled[0].params  # a speed switch, not part of what made the text
    alone = gen(PROMPTS[1], tiny_gpt2, manager, seed=4, compile=True, **knobs)[0]
    assert alone.data == eager[1]


def test_compile_without_a_cpu_compiler_fails_before_any_load(tiny_gpt2, manager):
    from torch._inductor import config as inductor

    with (
        inductor.patch({"cpp.cxx": ("no-such-c++",)}),
        pytest.raises(aigc.ConfigError, match=r"needs a C\+\+ compiler"),
    ):
        gen("The sea", tiny_gpt2, manager, compile=True)
    assert manager.stats()["loads"] == 0


def test_a_chat_for_a_model_without_a_template_is_read_as_a_transcript(tiny_gpt2, manager):
    chat = [
        {"role": "user", "content": "The sea"},
        {"role": "assistant", "content": "is wide."},
        {"role": "user", "content": "And the sky?"},
    ]
    asset = gen("And the sky?", tiny_gpt2, manager, seed=3, messages=chat)[0]
    transcript = gen("User: The sea\nAssistant: is wide.\nUser: And the sky?\nAssistant:", tiny_gpt2, manager, seed=3)[
        0
    ]
    assert asset.data == transcript.data and asset.info["messages"] == chat


@pytest.mark.parametrize(
    "messages, says",
    [
        ([], "non-empty list"),
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "end with the user's turn"),
        ([{"role": "tool", "content": "x"}], "role"),
        ([{"role": "user", "content": 3}], "content"),
        ([{"role": "user", "content": "a\x00b"}], "control character"),
        ("Hi", "non-empty list"),
    ],
)
def test_a_malformed_chat_is_refused_before_loading(tiny_gpt2, manager, messages, says):
    with pytest.raises(aigc.ConfigError, match=says):
        gen("Hi", tiny_gpt2, manager, messages=messages)
