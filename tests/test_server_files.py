"""No knob reaches the server's file system (issue 25): a knob that reads files (a GAN prior, a LoRA adapter, an
input image) takes over HTTP only a name in the server's --models, an earlier asset or inline data, in generate,
batch (params and rows), run (a recipe's steps and `set`) and OpenAI requests alike; any path is refused in the
same words whether it exists or not; a Hub-id-shaped model is looked up as a Hub id, never in the server's working
directory; and a prior that is a FIFO fails at once, locally and over HTTP, instead of freezing a worker."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
from contextlib import ExitStack, contextmanager

import numpy as np
import pytest

import aigc
from aigc.errors import ConfigError
from aigc.runtime.devices import DeviceManager

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from serving import served_models, server, wait_done  # noqa: E402

PRIOR = "glow.safetensors"  # a prior in the server's --models
ADAPTER = "tiny-lora"  # a LoRA of tiny-gpt2 in the server's --models


@contextmanager
def _cwd(path):
    here = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(here)


def _prior(path, value: float = 2.0) -> None:
    """A valid prior written by the project's own writer (an 8-d latent, as the tiny DCGAN's)."""
    from aigc.media.latent_prior import FORMAT, Prior, save_prior

    save_prior(Prior(np.full(8, value, np.float32), np.full(8, 0.5, np.float32), {"format": FORMAT}), path)


def _lora(path, base: str) -> None:
    """A tiny LoRA of the tiny GPT-2 with random (not zero) weights, so it changes what the model writes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(
            r=4,
            lora_alpha=64,
            target_modules=["c_attn"],
            fan_in_fan_out=True,
            init_lora_weights=False,
            task_type="CAUSAL_LM",
        ),
    )
    model.save_pretrained(str(path), safe_serialization=True)
    (path / "aigc-adapter.json").write_text(json.dumps({"base_model": base}))


@pytest.fixture(scope="module")
def place(tmp_path_factory, tiny_gpt2, tiny_dcgan, tiny_sd):
    """The server's --models (tiny GAN, GPT-2, SD, a prior, an adapter), a valid prior and a FIFO outside it, and the
    server's working directory, which holds a private file."""
    root = tmp_path_factory.mktemp("server-files")
    models = served_models(root / "models", tiny_gpt2, tiny_dcgan)
    (models / "tiny-sd").symlink_to(tiny_sd)
    _prior(models / PRIOR)
    _lora(models / ADAPTER, tiny_gpt2)
    outside = root / "elsewhere"
    outside.mkdir()
    _prior(outside / "valid.safetensors")
    os.mkfifo(outside / "pipe.json")
    cwd = root / "cwd"
    (cwd / "private").mkdir(parents=True)
    (cwd / "private" / "notes.txt").write_text("the team's secrets\n")
    return {"root": root, "models": models, "outside": outside, "cwd": cwd}


@pytest.fixture(scope="module")
def url(place):
    with ExitStack() as stack:
        with _cwd(place["cwd"]):  # the server's working directory: where a path-like model would be looked for
            address, _ = stack.enter_context(server(place["root"] / "data", place["models"]))
        yield address


def post(url: str, body: dict, path: str = "/v1/jobs") -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=30)  # a worker stuck on a FIFO fails the test, never hangs it


def refused(answer: httpx.Response, field: str, value: str) -> str:
    """The refusal's message with the value taken out: what must read the same whether a path exists or not."""
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["field"] == field and error["aigc_type"] == "ConfigError", error
    return error["message"].replace(repr(value)[:80], "VALUE").replace(value, "VALUE")


def gan(params: dict | None = None, **job) -> dict:
    return {
        "kind": "image",
        "prompt": "a face",
        "backend": "gan",
        "model": "tiny-gan.pth",
        "seed": 3,
        "params": params or {},
        **job,
    }


def png_data_url() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "gray").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# --- finding 1: a FIFO freezes the server -------------------------------------------------------------------------
def test_a_prior_that_is_a_fifo_a_device_or_a_directory_fails_at_once_locally(tmp_path, tiny_dcgan):
    fifo = tmp_path / "prior.json"
    os.mkfifo(fifo)
    for bad in (fifo, "/dev/zero", tmp_path):
        outcome: list = []

        def generate(bad: object = bad, outcome: list = outcome) -> None:  # this round's, bound now
            try:
                aigc.generate(
                    "image", "x", model=tiny_dcgan, backend="gan", seed=1, prior=str(bad), manager=DeviceManager("cpu")
                )
            except Exception as error:  # noqa: BLE001 - what it raised is the assertion below
                outcome.append(error)

        worker = threading.Thread(target=generate, daemon=True)
        start = time.monotonic()
        worker.start()
        worker.join(timeout=20)
        if worker.is_alive():  # blocked opening the FIFO: a writer that closes at once lets it go, then fail
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            worker.join(timeout=5)
            pytest.fail(f"prior={bad} blocked the call instead of being refused")
        assert time.monotonic() - start < 10
        assert len(outcome) == 1 and isinstance(outcome[0], ConfigError) and outcome[0].field == "prior", outcome
        assert "regular file" in str(outcome[0]) or "directory" in str(outcome[0])


def test_a_fifo_prior_over_http_is_a_422_and_the_server_keeps_answering(url, place):
    stuck = place["models"] / "stuck.json"  # even the operator's own folder: a FIFO there is refused, not read
    os.mkfifo(stuck)
    try:
        for value in (str(place["outside"] / "pipe.json"), "stuck.json"):
            answer = post(url, gan({"prior": value}))
            assert answer.status_code == 422 and answer.json()["error"]["field"] == "prior", answer.text
            assert httpx.get(f"{url}/health", timeout=5).status_code == 200
    finally:
        stuck.unlink()


# --- finding 2: knobs that take paths ---------------------------------------------------------------------------
def test_a_prior_path_is_refused_in_the_same_words_whether_it_exists_or_not(url, place):
    values = [
        "/etc/shadow",
        "/etc/nonexistent",
        "../x",
        "~/x",
        "..\\x",
        str(place["outside"] / "pipe.json"),
        str(place["outside"] / "valid.safetensors"),
        f"{place['models']}/{PRIOR}",
        "not-in-models.json",
    ]
    messages = {refused(post(url, gan({"prior": value})), "prior", value) for value in values}
    assert len(messages) == 1, messages  # no existence oracle
    assert "--models" in messages.pop()
    assert httpx.get(f"{url}/v1/jobs", timeout=10).json()["total"] == 0  # nothing was queued


def test_a_prior_named_in_the_servers_models_is_used(url):
    plain = wait_done(url, post(url, gan(n=2)).json()["id"])
    tilted = wait_done(url, post(url, gan({"prior": PRIOR}, n=2)).json()["id"])
    assert plain["state"] == tilted["state"] == "done", tilted
    images = [[httpx.get(f"{url}{a['url']}").content for a in job["assets"]] for job in (plain, tilted)]
    assert images[0] != images[1]  # the same seeds drawn from the prior are other faces
    meta = httpx.get(f"{url}{tilted['assets'][0]['meta']}").json()
    assert str(meta["record"]["params"]["prior"]).endswith(PRIOR)


def test_an_adapter_path_is_refused_and_an_adapter_named_in_models_is_used(url, tiny_gpt2):
    text = {"kind": "text", "prompt": "The sea", "model": "tiny-gpt2", "seed": 4, "params": {"max_new_tokens": 6}}
    values = ["/etc/passwd", "/etc/nonexistent", "../tiny-lora", tiny_gpt2, "tiny-gpt2/../tiny-lora"]
    messages = {refused(post(url, {**text, "params": {**text["params"], "adapter": v}}), "adapter", v) for v in values}
    assert len(messages) == 1, messages
    base = wait_done(url, post(url, text).json()["id"])
    tuned = wait_done(url, post(url, {**text, "params": {**text["params"], "adapter": ADAPTER}}).json()["id"])
    assert base["state"] == tuned["state"] == "done", tuned
    texts = [httpx.get(f"{url}{job['assets'][0]['url']}").text for job in (base, tuned)]
    assert texts[0] != texts[1]  # the adapter's random LoRA weights change what it writes


def test_a_batch_takes_no_input_image_path_in_its_params_or_its_rows(url):
    batch = {"type": "batch", "kind": "image", "model": "tiny-sd", "rows": ["a castle"], "params": {"steps": 2}}
    answer = post(url, {**batch, "params": {"steps": 2, "init_image": "/etc/hosts"}})
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "init_image", answer.text
    for image in ("/etc/hosts", png_data_url()):  # a row has no image of its own: the batch's params carry it
        answer = post(url, {**batch, "rows": [{"prompt": "a castle", "init_image": image}]})
        assert answer.status_code == 422 and answer.json()["error"]["field"] == "rows.1.init_image", answer.text
    rows = [{"prompt": "a face", "prior": "/etc/passwd"}]  # any file knob of a row, on any backend it chooses
    answer = post(url, {"type": "batch", "kind": "image", "rows": rows, "backend": "gan", "model": "tiny-gan.pth"})
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "rows.1.prior", answer.text
    answer = post(url, {"type": "batch", "kind": "image", "rows": ["a face"], "params": {"prior": "/etc/passwd"}})
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "prior", answer.text
    images = post(
        url,
        {
            **batch,
            "params": {"steps": 2, "strength": 0.5, "init_image": png_data_url()},
            "rows": ["a castle", {"prompt": "a castle at night", "seed": 5}],
        },
    )
    priors = post(
        url,
        {
            "type": "batch",
            "kind": "image",
            "backend": "gan",
            "model": "tiny-gan.pth",
            "rows": [{"prompt": "a face", "prior": PRIOR}],
            "params": {"truncation": 0.5},
        },
    )
    for made in (images, priors):  # what a batch may name: inline data or an asset in its params, names in --models
        assert made.status_code == 202, made.text
        job = wait_done(url, made.json()["id"])
        assert job["state"] == "done" and len(job["assets"]) == len(job["request"]["rows"]), job


def test_a_run_job_takes_no_path_in_a_steps_params_or_in_set(url):
    recipe = (
        "steps:\n  - name: face\n    kind: image\n    backend: gan\n    model: tiny-gan.pth\n"
        "    prompt: a face\n    params: {prior: %s}\n"
    )
    answer = post(url, {"type": "run", "yaml": recipe % "/etc/passwd"})
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "prior", answer.text
    assert ":7:" in answer.json()["error"]["message"]  # the recipe's line of the knob
    answer = post(url, {"type": "run", "yaml": recipe % PRIOR, "set": {"face.prior": "/etc/passwd"}})
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "set", answer.text
    image = (
        "steps:\n  - name: castle\n    kind: image\n    model: tiny-sd\n    prompt: a castle\n"
        "    params: {init_image: /etc/hosts, steps: 2}\n"
    )
    answer = post(url, {"type": "run", "yaml": image})
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "init_image", answer.text
    done = wait_done(url, post(url, {"type": "run", "yaml": recipe % PRIOR, "set": {"face.prior": PRIOR}}).json()["id"])
    assert done["state"] == "done", done


def test_an_openai_request_with_a_path_knob_is_a_400(url):
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)
    for value in ("/etc/passwd", "/etc/nonexistent"):
        with pytest.raises(openai.BadRequestError) as error:
            client.images.generate(model="tiny-gan.pth", prompt="a face", extra_body={"prior": value, "seed": 1})
        assert error.value.body["param"] == "prior" and "--models" in error.value.body["message"]
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model="tiny-gpt2", prompt="x", max_tokens=2, extra_body={"adapter": "/etc"})
    assert error.value.body["param"] == "adapter"
    answer = client.images.generate(
        model="tiny-gan.pth", prompt="a face", response_format="b64_json", extra_body={"prior": PRIOR, "seed": 1}
    )
    assert len(answer.data) == 1


@pytest.mark.parametrize("model", ["a/..", "../tiny-gpt2", "/etc", "~root", "tiny-gpt2/..", "a\\b", "./tiny-gpt2"])
def test_a_model_path_is_a_422_never_a_500(url, model):
    answer = post(url, {"kind": "text", "prompt": "x", "model": model})
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "model", answer.text


def test_a_hub_shaped_model_is_looked_up_on_the_hub_never_in_the_servers_working_directory(url, place):
    assert (place["cwd"] / "private" / "notes.txt").is_file()
    messages = set()
    for model in ("private/notes.txt", "private/absent.txt"):
        answer = post(url, {"kind": "text", "prompt": "x", "model": model})
        assert answer.status_code == 422 and "not available offline" in answer.json()["error"]["message"], answer.text
        messages.add(answer.json()["error"]["message"].replace(model, "VALUE"))
        row = post(url, {"type": "batch", "kind": "text", "rows": [{"prompt": "x", "model": model}]})
        assert row.status_code == 422 and "not available offline" in row.json()["error"]["message"], row.text
        step = post(
            url, {"type": "run", "yaml": f"steps:\n  - name: a\n    kind: text\n    model: {model}\n    prompt: x\n"}
        )
        assert step.status_code == 422 and "not available offline" in step.json()["error"]["message"], step.text
    assert len(messages) == 1, messages  # the file in the working directory was never looked at
