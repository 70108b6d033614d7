"""The OpenAI-compatible layer against a real `aigc serve` subprocess, with the official `openai` package as the
client: models, chat (also streamed), completions, images (b64_json and url), speech; answers equal to local
aigc.generate calls with the same seeds (a completion continues its prompt, only a chat uses the template); requests
merged into shared batched calls give exactly what they give alone; what aigc cannot do is refused with a 400 that
says so, a model it does not have with OpenAI's 404 listing the ones it has; every error carries OpenAI's type and
aigc's own."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time

import numpy as np
import pytest

import aigc
from aigc.runtime.devices import DeviceManager

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from serving import TOKEN, served_models, server  # noqa: E402

CHATS = [
    [{"role": "user", "content": f"Tell me about {topic}"}]
    for topic in ("the sea", "a door", "glass", "rain", "a lighthouse", "winter", "bread", "a violin")
]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_gpt2, tiny_dcgan):
    return served_models(tmp_path_factory.mktemp("served-openai"), tiny_gpt2, tiny_dcgan)


@pytest.fixture(scope="module")
def served(tmp_path_factory, models):
    with server(tmp_path_factory.mktemp("openai") / "data", models) as (url, _):
        yield url


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=f"{served}/v1", api_key="unused-on-a-local-server", max_retries=0)


@pytest.fixture(scope="module")
def manager():
    return DeviceManager("cpu")


def local_text(tiny_gpt2, manager, prompt, **knobs):
    return [a.data for a in aigc.generate("text", prompt, model=tiny_gpt2, manager=manager, **knobs)]


def test_models_lists_default_the_packs_and_the_servers_models(client):
    ids = [model.id for model in client.models.list()]
    assert ids[0] == "default" and "tiny-gpt2" in ids and "pack:smollm2" in ids and "pack:piper-joe" in ids


def test_chat_answers_what_a_local_call_with_the_same_chat_and_seed_makes(client, served, tiny_gpt2, manager):
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour"},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another"},
    ]
    answer = client.chat.completions.create(
        model="tiny-gpt2", messages=chat, n=2, seed=3, max_tokens=8, temperature=0.9, top_p=0.95
    )
    assert answer.object == "chat.completion" and [c.index for c in answer.choices] == [0, 1]
    expected = local_text(
        tiny_gpt2, manager, "Another", messages=chat, n=2, seed=3, max_new_tokens=8, temperature=0.9, top_p=0.95
    )
    assert [c.message.content for c in answer.choices] == expected
    assert answer.choices[0].finish_reason == "length" and answer.usage.completion_tokens == 16
    job = httpx.get(f"{served}/v1/jobs/{answer.model_extra['aigc']['job']}").json()  # an ordinary job in the queue
    assert job["state"] == "done" and job["request"]["params"]["messages"][-1]["content"] == "Another"


def test_a_streamed_chat_sends_the_same_text_piece_by_piece_then_done(client, served):
    knobs = dict(model="tiny-gpt2", messages=CHATS[0], seed=5, max_tokens=12)
    whole = client.chat.completions.create(**knobs).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **knobs))
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == whole and len([p for p in pieces if p]) > 1
    assert chunks[-1].usage.completion_tokens == 12 and chunks[-2].choices[0].finish_reason == "length"
    with httpx.stream("POST", f"{served}/v1/chat/completions", json={**knobs, "stream": True}) as raw:
        lines = [line for line in raw.iter_lines() if line]
    assert raw.headers["content-type"].startswith("text/event-stream") and lines[-1] == "data: [DONE]"


def test_completions_of_several_prompts_come_prompt_by_prompt(client, tiny_gpt2, manager):
    answer = client.completions.create(
        model="tiny-gpt2", prompt=["The sea", "A door"], n=2, seed=9, max_tokens=5, stop=["\n"]
    )
    assert [c.text for c in answer.choices] == local_text(
        tiny_gpt2, manager, ["The sea", "A door"], n=2, seed=9, max_new_tokens=5, stop=["\n"]
    )
    streamed = client.completions.create(model="tiny-gpt2", prompt="The sea", seed=9, max_tokens=5, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == answer.choices[0].text


def test_images_as_b64_json_and_as_signed_urls(client, served, tiny_dcgan, manager):
    from PIL import Image

    answer = client.images.generate(
        model="tiny-gan.pth", prompt="a face", n=2, size="96x96", response_format="b64_json", extra_body={"seed": 4}
    )
    images = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in answer.data]
    local = aigc.generate("image", "a face", model=tiny_dcgan, n=2, seed=4, size=96, manager=manager)
    assert all(np.array_equal(np.asarray(a), np.asarray(b.data)) for a, b in zip(images, local, strict=True))
    linked = client.images.generate(
        model="tiny-gan.pth", prompt="a face", size="96x96", extra_body={"seed": 4}, output_format="webp"
    )
    fetched = httpx.get(linked.data[0].url)
    assert fetched.headers["content-type"] == "image/webp"  # converted, losslessly
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(fetched.content)).convert("RGB")), np.asarray(images[0]))


def test_speech_in_wav_flac_ogg_and_pcm(client, manager):
    import soundfile

    local = aigc.generate("audio", "Hello there.", seed=2, manager=manager)[0].data
    for response_format in ("wav", "flac", "ogg"):
        spoken = client.audio.speech.create(
            model="default",
            voice="default",
            input="Hello there.",
            response_format=response_format,
            extra_body={"seed": 2},
        )
        samples, rate = soundfile.read(io.BytesIO(spoken.content), dtype="float32")
        assert rate == local.sample_rate and len(samples) == len(local.samples)
        tolerance = 0.05 if response_format == "ogg" else 1e-4  # Vorbis is lossy
        assert np.abs(samples - local.samples).mean() < tolerance
    pcm = client.audio.speech.create(
        model="default", voice="default", input="Hello there.", response_format="pcm", extra_body={"seed": 2}
    )
    assert len(pcm.content) == 2 * len(local.samples)


@pytest.mark.parametrize(
    "call, says",
    [
        (
            lambda c: c.chat.completions.create(
                model="tiny-gpt2",
                messages=CHATS[0],
                tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
            ),
            "tool calls",
        ),
        (lambda c: c.chat.completions.create(model="tiny-gpt2", messages=CHATS[0], n=2, stream=True), "n=1"),
        (
            lambda c: c.chat.completions.create(model="tiny-gpt2", messages=[{"role": "assistant", "content": "Hi"}]),
            "user turn",
        ),
        (lambda c: c.chat.completions.create(model="tiny-gpt2", messages=CHATS[0], extra_body={"top_q": 1}), "top_q"),
        (lambda c: c.chat.completions.create(model="tiny-gpt2", messages=CHATS[0], temperature=-1), "out of range"),
        (lambda c: c.completions.create(model="tiny-gpt2", prompt=[1, 2, 3]), "token ids"),
        (lambda c: c.images.generate(model="tiny-gan.pth", prompt="a face", size="96x64"), "square"),
        (lambda c: c.images.generate(model="tiny-gan.pth", prompt="a face", size="big"), "WIDTHxHEIGHT"),
        (lambda c: c.audio.speech.create(model="default", voice="alloy", input="Hi"), "voice='alloy'"),
        (lambda c: c.audio.speech.create(model="default", voice="default", input="Hi", response_format="mp3"), "mp3"),
    ],
)
def test_what_aigc_cannot_do_is_a_400_that_says_so(client, call, says):
    with pytest.raises(openai.BadRequestError) as refused:
        call(client)
    assert says.lower() in str(refused.value).lower()


@pytest.mark.pack
def test_a_completion_continues_the_prompt_and_only_a_chat_wraps_it_in_the_template(client, manager):
    """OpenAI's completions continue the text; only chat completions read it as a user's turn in the template."""
    knobs, prompt = dict(seed=11, max_tokens=16), "Once upon a time"
    completed = client.completions.create(model="default", prompt=prompt, **knobs)
    plain = aigc.generate(
        "text", prompt, model="pack:smollm2", chat=False, seed=11, max_new_tokens=16, manager=manager
    )[0]
    assert completed.choices[0].text == plain.data
    assert completed.usage.prompt_tokens == plain.info["prompt_tokens"] < 8  # the prompt's own tokens, nothing more
    turn = [{"role": "user", "content": prompt}]
    chatted = client.chat.completions.create(model="pack:smollm2", messages=turn, **knobs)
    templated = aigc.generate(
        "text", prompt, model="pack:smollm2", messages=turn, seed=11, max_new_tokens=16, manager=manager
    )[0]
    assert chatted.choices[0].message.content == templated.data
    assert chatted.usage.prompt_tokens == templated.info["prompt_tokens"] > 20  # the template wrapped it
    asked = client.completions.create(model="pack:smollm2", prompt=prompt, extra_body={"chat": True}, **knobs)
    assert asked.choices[0].text == templated.data  # aigc's own chat field, when a request sets it, decides


@pytest.mark.parametrize(
    "call, listed, unlisted",
    [
        (
            lambda c: c.chat.completions.create(model="gpt-4o", messages=CHATS[0]),
            ["default", "pack:smollm2", "tiny-gpt2"],
            ["tiny-gan.pth", "pack:piper-joe", "pack:minilm"],
        ),
        (
            lambda c: c.completions.create(model="gpt-3.5-turbo-instruct", prompt="Hi"),
            ["default", "pack:smollm2", "tiny-gpt2"],
            ["tiny-gan.pth", "pack:gan-faces"],
        ),
        (
            lambda c: c.images.generate(model="dall-e-3", prompt="a face"),
            ["default", "pack:gan-faces", "tiny-gan.pth"],
            ["tiny-gpt2", "pack:smollm2"],
        ),
        (
            lambda c: c.audio.speech.create(model="tts-1", voice="default", input="Hi"),
            ["default", "pack:piper-joe"],
            ["tiny-gpt2", "tiny-gan.pth", "pack:smollm2"],
        ),
        (lambda c: c.chat.completions.create(model="pack:nope", messages=CHATS[0]), ["pack:smollm2"], []),
    ],
)
def test_a_model_this_server_does_not_have_is_openais_404_listing_the_routes_models(client, call, listed, unlisted):
    with pytest.raises(openai.NotFoundError) as refused:
        call(client)
    error = refused.value.body
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "model_not_found", "model")
    named = error["message"].split("models: ")[1].split(" (GET /v1/models")[0].split(", ")
    assert set(listed) <= set(named) and not set(unlisted) & set(named), error["message"]
    assert "is not served here" in str(refused.value)


def test_every_route_answers_one_error_shape_with_openais_type_and_aigcs_own(client, served):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny-gpt2", messages=CHATS[0], temperature=-1)
    assert refused.value.body["type"] == "invalid_request_error" and refused.value.body["aigc_type"] == "ConfigError"
    assert refused.value.body["param"] == "temperature"
    knob = httpx.post(
        f"{served}/v1/jobs", json={"kind": "text", "prompt": "x", "model": "tiny-gpt2", "params": {"temperature": -1}}
    )
    shape = knob.json()["error"]  # aigc's /v1/jobs: the same error, as a 422
    assert knob.status_code == 422 and {**shape, "message": None} == {**refused.value.body, "message": None}
    missing = httpx.get(f"{served}/v1/jobs/nope").json()["error"]
    assert (missing["type"], missing["aigc_type"]) == ("not_found_error", "NotFoundError")
    with pytest.raises(aigc.BackendNotFoundError, match="'nope' is not a text backend"):  # aigc.Client reads aigc_type
        aigc.Client(served).generate("text", "x", backend="nope")


def test_a_full_queue_is_openais_rate_limit_error(tmp_path, models):
    with server(tmp_path / "data", models, "--queue-per-owner", "1") as (url, _):
        blocker = httpx.post(
            f"{url}/v1/jobs",
            json={"kind": "text", "prompt": "x", "model": "tiny-gpt2", "n": 1000, "params": {"max_new_tokens": 100}},
        ).json()["id"]
        try:
            with pytest.raises(openai.RateLimitError) as refused:
                openai.OpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0).completions.create(
                    model="tiny-gpt2", prompt="Hi", max_tokens=2
                )
        finally:
            httpx.post(f"{url}/v1/jobs/{blocker}/cancel")
    error = refused.value.body
    assert (error["type"], error["code"], error["aigc_type"]) == (
        "rate_limit_exceeded",
        "rate_limit_exceeded",
        "QueueFull",
    )
    assert refused.value.response.headers["retry-after"] == "10"


def test_a_cancelled_request_is_a_conflict_answered_whole_or_in_its_stream(client, served):
    blocker = httpx.post(
        f"{served}/v1/jobs",
        json={"kind": "text", "prompt": "x", "model": "tiny-gpt2", "n": 1000, "params": {"max_new_tokens": 100}},
    ).json()["id"]
    refused: list[Exception] = []

    def ask() -> None:
        try:
            client.chat.completions.create(model="tiny-gpt2", messages=CHATS[1], max_tokens=4)
        except openai.APIStatusError as error:
            refused.append(error)

    try:
        with httpx.stream(
            "POST", f"{served}/v1/chat/completions", json={"model": "tiny-gpt2", "stream": True, "messages": CHATS[0]}
        ) as streamed:
            asker = threading.Thread(target=ask)
            asker.start()
            deadline, waiting = time.time() + 60, []
            while len(waiting) < 2:  # both requests wait behind the blocker
                assert time.time() < deadline, "the requests never queued"
                time.sleep(0.05)
                pending = httpx.get(f"{served}/v1/jobs", params={"state": "pending"}).json()["jobs"]
                waiting = [job["id"] for job in pending if job["id"] != blocker]
            for job_id in waiting:
                httpx.post(f"{served}/v1/jobs/{job_id}/cancel")
            lines = [line for line in streamed.iter_lines() if line.startswith("data: {")]
            asker.join(timeout=60)
    finally:
        httpx.post(f"{served}/v1/jobs/{blocker}/cancel")
    event = json.loads(lines[-1].removeprefix("data: "))["error"]
    assert (event["type"], event["aigc_type"]) == ("conflict_error", "Cancelled")
    assert isinstance(refused[0], openai.ConflictError)
    assert (refused[0].body["type"], refused[0].body["aigc_type"]) == ("conflict_error", "Cancelled")


def test_hostile_bodies_are_400s_in_openais_error_shape(served):
    for body in (
        '{"model": "tiny-gpt2", "messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}',
        "[1, 2]",
        "not json",
        '{"model": "tiny-gpt2", "messages": [{"role": "tool", "content": "x"}]}',
        '{"model": "tiny-gpt2", "messages": [{"role": "user", "content": "a\u0000b"}]}',
    ):
        answer = httpx.post(f"{served}/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
        error = answer.json()["error"]
        assert answer.status_code == 400 and error["message"], (body, answer.text)
        assert error["type"] == "invalid_request_error" and error["aigc_type"] == "ConfigError", (body, answer.text)


def test_with_tokens_a_wrong_key_is_refused_and_image_links_are_signed(tmp_path, models):
    with server(tmp_path / "data", models, env={**os.environ, "AIGC_TOKEN": TOKEN}) as (url, _):
        with pytest.raises(openai.AuthenticationError) as refused:
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong-token-0123456789", max_retries=0).models.list()
        assert refused.value.body["type"] == "authentication_error"
        assert refused.value.body["aigc_type"] == "AuthenticationError"
        good = openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)
        link = good.images.generate(model="tiny-gan.pth", prompt="a face").data[0].url
        assert httpx.get(link).status_code == 200  # no token needed: the link is signed, for an hour
        assert httpx.get(link.replace("signature=", "signature=0")).status_code == 401
        assert httpx.get(link.split("?")[0]).status_code == 401


def test_concurrent_chats_are_merged_into_shared_calls_and_get_what_they_get_alone(client, served, tiny_gpt2, manager):
    # a long job holds the worker while the chats queue up behind it, so they are all waiting when it is cancelled
    blocker = httpx.post(
        f"{served}/v1/jobs",
        json={"kind": "text", "prompt": "x", "model": "tiny-gpt2", "n": 1000, "params": {"max_new_tokens": 100}},
    ).json()["id"]
    answers: dict[int, object] = {}

    def ask(i: int) -> None:
        answers[i] = client.chat.completions.create(model="tiny-gpt2", messages=CHATS[i], seed=100 + i, max_tokens=10)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(CHATS))]
    for thread in threads:
        thread.start()
    deadline = time.time() + 60
    while httpx.get(f"{served}/v1/jobs", params={"state": "pending"}).json()["total"] < len(CHATS):
        assert time.time() < deadline, "the chats never queued"
        time.sleep(0.05)
    httpx.post(f"{served}/v1/jobs/{blocker}/cancel")
    for thread in threads:
        thread.join(timeout=120)
    merged = [answers[i].model_extra["aigc"]["merged_with"] for i in range(len(CHATS))]
    assert all(len(others) == len(CHATS) - 1 for others in merged)  # all eight in one call
    events = httpx.get(f"{served}/v1/jobs/{answers[0].model_extra['aigc']['job']}/events").text
    assert '"batched_with": 8' in events
    for i, chat in enumerate(CHATS):
        alone = local_text(tiny_gpt2, manager, chat[-1]["content"], messages=chat, seed=100 + i, max_new_tokens=10)
        assert answers[i].choices[0].message.content == alone[0]
