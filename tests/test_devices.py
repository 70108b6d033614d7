"""The shared device manager on real tiny models: device and dtype policy, budget, eviction, OOM, threads."""

from __future__ import annotations

import threading

import pytest
import torch

import aigc
from aigc.runtime.devices import DeviceManager, parse_bytes, resolve_device, resolve_dtype, size_in_bytes


def test_auto_picks_the_best_device_and_explicit_devices_must_exist(monkeypatch):
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    monkeypatch.setenv("AIGC_DEVICE", "cpu")
    assert resolve_device(None).type == "cpu"
    with pytest.raises(aigc.ConfigError, match="'tpu' is not a device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(aigc.DeviceError, match="sees no CUDA GPU"):
            resolve_device("cuda")


def test_dtype_policy_and_override(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_dtype(None, cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    monkeypatch.setenv("AIGC_DTYPE", "float16")
    assert resolve_dtype(None, cpu) == torch.float16
    with pytest.raises(aigc.ConfigError, match="not a dtype"):
        resolve_dtype("int3", cpu)


def test_memory_sizes_parse():
    assert parse_bytes("6GiB") == 6 * 1024**3
    assert parse_bytes("512MB") == 512 * 1024**2
    assert parse_bytes(1000) == 1000
    with pytest.raises(aigc.ConfigError):
        parse_bytes("lots")


def _load_text(manager, model):
    aigc.generate("text", "The sea", model=model, manager=manager, seed=0, max_new_tokens=2)


def _tiny_size(model_dir) -> int:
    from transformers import AutoModelForCausalLM

    return size_in_bytes(AutoModelForCausalLM.from_pretrained(model_dir))


def test_a_second_model_past_the_budget_evicts_the_least_recently_used(tiny_gpt2, tiny_gpt2_other):
    one = _tiny_size(tiny_gpt2)
    manager = DeviceManager("cpu", budget=int(one * 1.5), reserve=0)
    _load_text(manager, tiny_gpt2)
    assert [m["model"] for m in manager.stats()["models"]] == [tiny_gpt2]
    _load_text(manager, tiny_gpt2_other)
    stats = manager.stats()
    assert [m["model"] for m in stats["models"]] == [tiny_gpt2_other]
    assert stats["evictions"] == 1 and stats["loads"] == 2
    _load_text(manager, tiny_gpt2_other)  # cached: no new load
    assert manager.stats()["loads"] == 2 and manager.stats()["hits"] == 1


def test_both_models_stay_when_the_budget_allows(tiny_gpt2, tiny_gpt2_other):
    manager = DeviceManager("cpu", budget="1GiB", reserve=0)
    _load_text(manager, tiny_gpt2)
    _load_text(manager, tiny_gpt2_other)
    assert len(manager.stats()["models"]) == 2 and manager.stats()["evictions"] == 0


def test_a_model_in_use_is_never_evicted(tiny_gpt2, tiny_gpt2_other):
    manager = DeviceManager("cpu", budget=int(_tiny_size(tiny_gpt2) * 1.5), reserve=0)
    _load_text(manager, tiny_gpt2)
    key = manager.key("causal-lm", tiny_gpt2)
    with manager.use(key, lambda: pytest.fail("must not reload")) as lm:
        with pytest.warns(UserWarning, match="does not fit"):
            _load_text(manager, tiny_gpt2_other)
        assert lm.model.lm_head.weight.shape[0] == 50257  # still whole and usable
    assert {m["model"] for m in manager.stats()["models"]} == {tiny_gpt2, tiny_gpt2_other}


def test_out_of_memory_halves_the_batch_and_keeps_results(manager):
    calls = []

    def work(chunk):
        calls.append(len(chunk))
        if len(chunk) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [x * 10 for x in chunk]

    assert manager.run_batched(work, list(range(5))) == [0, 10, 20, 30, 40]
    assert calls[:2] == [5, 2] and manager.stats()["oom_retries"] == 1


def test_out_of_memory_at_batch_size_one_is_a_clear_error(manager):
    def work(chunk):
        raise RuntimeError("MPS backend out of memory")

    with pytest.raises(aigc.GenerationError, match="even at batch size 1"):
        manager.run_batched(work, [1, 2, 3])


def test_other_errors_are_not_mistaken_for_out_of_memory(manager):
    def work(chunk):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        manager.run_batched(work, [1, 2])
    assert manager.stats()["oom_retries"] == 0


def test_simulated_oom_during_real_generation_retries_with_smaller_batches(tiny_gpt2, manager):
    prompts = ["The sea", "A door", "Once upon", "Night"]
    expected = [
        a.data for a in aigc.generate("text", prompts, model=tiny_gpt2, manager=manager, seed=3, max_new_tokens=6)
    ]
    with manager.use(manager.key("causal-lm", tiny_gpt2), lambda: None) as lm:
        real_forward = lm.model.forward

        def forward_that_runs_out_of_memory(*args, **kwargs):
            if kwargs["input_ids"].shape[0] > 1:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return real_forward(*args, **kwargs)

        lm.model.forward = forward_that_runs_out_of_memory
    try:
        got = aigc.generate("text", prompts, model=tiny_gpt2, manager=manager, seed=3, max_new_tokens=6)
    finally:
        del lm.model.forward
    assert [a.data for a in got] == expected
    assert manager.stats()["oom_retries"] == 2  # 4 -> 2 -> 1


def test_two_threads_generating_at_once_get_correct_results(tiny_gpt2, manager):
    jobs = {"a": ("The sea", 1), "b": ("A lighthouse keeper", 2)}
    expected = {
        k: aigc.generate("text", p, model=tiny_gpt2, manager=DeviceManager("cpu"), seed=s, max_new_tokens=8)[0].data
        for k, (p, s) in jobs.items()
    }
    results: dict[str, list[str]] = {k: [] for k in jobs}
    errors: list[BaseException] = []

    def worker(name):
        prompt, seed = jobs[name]
        try:
            for _ in range(3):
                results[name].append(
                    aigc.generate("text", prompt, model=tiny_gpt2, manager=manager, seed=seed, max_new_tokens=8)[0].data
                )
        except BaseException as error:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(name,)) for name in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == {k: [v] * 3 for k, v in expected.items()}
    assert manager.stats()["loads"] == 1  # one model, loaded once, shared by both threads


def test_stats_describe_what_is_loaded(tiny_gpt2, manager):
    _load_text(manager, tiny_gpt2)
    stats = manager.stats()
    assert stats["device"] == "cpu" and stats["dtype"] == "float32"
    (entry,) = stats["models"]
    assert entry["backend"] == "causal-lm" and entry["where"] == "cpu" and entry["mb"] > 1 and not entry["in_use"]


@pytest.mark.gpu
def test_eviction_on_cuda_offloads_to_cpu_and_brings_back(tiny_gpt2, tiny_gpt2_other):
    manager = DeviceManager("cuda", budget=int(_tiny_size(tiny_gpt2) * 0.6), reserve=0)  # bf16/fp16 halves it
    _load_text(manager, tiny_gpt2)
    _load_text(manager, tiny_gpt2_other)
    where = {m["model"]: m["where"] for m in manager.stats()["models"]}
    assert where[tiny_gpt2] == "cpu" and where[tiny_gpt2_other].startswith("cuda")
    _load_text(manager, tiny_gpt2)
    where = {m["model"]: m["where"] for m in manager.stats()["models"]}
    assert where[tiny_gpt2].startswith("cuda") and manager.stats()["loads"] == 2


def test_release_drops_every_variant_of_a_model_and_nothing_else(manager):
    import torch

    for variant in ({}, {"safety_checker": True}, {"fuse_qkv": False}):  # typed variants, no parsed key strings
        with manager.use(manager.key("diffusion", "sd", variant=variant), lambda: torch.nn.Linear(2, 2)):
            pass
    with manager.use(manager.key("diffusion", "other"), lambda: torch.nn.Linear(2, 2)):
        pass
    assert manager.release("diffusion", "sd") == 3
    assert [(m["model"]) for m in manager.stats()["models"]] == ["other"]
