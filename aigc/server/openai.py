"""The OpenAI-compatible layer: /v1/chat/completions, /v1/completions, /v1/images/generations and /edits (its form
read in openai_edits.py), /v1/audio/speech and /v1/models, so existing clients (the `openai` package, curl scripts,
tools that take a base URL) work unchanged. Each request becomes an ordinary generate job in the same queue (merged
with others, recorded, resumable, visible in /v1/jobs); aigc's own fields (best_of, min_score, backend, any backend
knob) ride in the body beside OpenAI's. OpenAI fields aigc cannot honour (tools, logprobs...) are refused, never
ignored.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..errors import ConfigError
from . import bodies
from .auth import Principal
from .service import API, Refusal, Service, error_body, error_response, json_body
from .store import Job

if TYPE_CHECKING:
    from ..runtime.registry import GeneratorClass

OWN_FIELDS = ("backend", "best_of", "min_score", "max_attempts", "diverse", "library")  # aigc's, beside OpenAI's
IGNORED = frozenset(
    {
        "user",
        "metadata",
        "store",
        "service_tier",
        "stream_options",
        "safety_identifier",
        "prompt_cache_key",
        "parallel_tool_calls",
    }
)  # bookkeeping that changes no output
UNSUPPORTED = {
    "tools": "tool calls",
    "tool_choice": "tool calls",
    "functions": "function calls",
    "function_call": "function calls",
    "logprobs": "log probabilities",
    "top_logprobs": "log probabilities",
    "logit_bias": "logit biases",
    "response_format": "structured output",
    "audio": "audio answers",
    "modalities": "audio answers",
    "prediction": "predicted outputs",
    "echo": "echo",
    "suffix": "suffixes",
    "reasoning_effort": "reasoning effort",
    "web_search_options": "web search",
    "frequency_penalty": "frequency penalties (aigc's repetition_penalty knob is its own)",
    "presence_penalty": "presence penalties (aigc's repetition_penalty knob is its own)",
    "quality": "image quality settings",
    "style": "image styles",
    "background": "transparent backgrounds",
    "moderation": "moderation levels",
    "output_compression": "output compression",
    "partial_images": "partial images",
    "instructions": "speech instructions",
}
TEXT_KNOBS = {
    "max_tokens": "max_new_tokens",
    "max_completion_tokens": "max_new_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "stop": "stop",
}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
SPEECH_FORMATS = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "pcm": "audio/pcm"}
FAILED_AS = {
    "ConfigError": 400,
    "NoMetadataError": 400,
    "BackendNotFoundError": 400,
    "ModelLoadError": 400,
    "StorageError": 507,
}  # a failed job's status by aigc's error type (any other: 500; cancelled: 409)
IMAGE_FORMATS = ("png", "webp", "jpeg")
MAX_LISTED = 40  # model ids an unknown model's 404 lists (GET /v1/models has them all)


def openai_routes(app: FastAPI, service: Service) -> None:
    router = APIRouter(prefix=API, dependencies=[Depends(_openai_request)])
    _define(router, service)
    app.include_router(router)


def _openai_request(request: Request) -> None:
    """Mark the request, so its errors are OpenAI's 400s (see service.error_response)."""
    request.state.openai = True


def _define(router: APIRouter, service: Service) -> None:
    @router.get("/models")
    def list_models(principal: Principal = Depends(service.who)) -> dict[str, Any]:
        return {"object": "list", "data": served_models(service)}

    @router.post("/chat/completions", openapi_extra=bodies.declared_body(bodies.chat(ROLES)))
    async def chat(request: Request, principal: Principal = Depends(service.who)) -> Response:
        return await _text(service, principal, await _body(request), chat=True)

    @router.post("/completions", openapi_extra=bodies.declared_body(bodies.completion()))
    async def completions(request: Request, principal: Principal = Depends(service.who)) -> Response:
        return await _text(service, principal, await _body(request), chat=False)

    @router.post("/images/generations", openapi_extra=bodies.declared_body(bodies.image(IMAGE_FORMATS)))
    async def images(request: Request, principal: Principal = Depends(service.who)) -> Response:
        return await _images(service, principal, request, await _body(request), image_job)

    @router.post("/images/edits", openapi_extra=bodies.declared_form(bodies.image_edit(IMAGE_FORMATS)))
    async def image_edits(request: Request, principal: Principal = Depends(service.who)) -> Response:
        from .openai_edits import edit_body, read_form

        body = await asyncio.to_thread(edit_body, await read_form(request))
        return await _images(service, principal, request, body, edit_job)

    @router.post("/audio/speech", openapi_extra=bodies.declared_body(bodies.speech(SPEECH_FORMATS)))
    async def speech(request: Request, principal: Principal = Depends(service.who)) -> Response:
        body = await _body(request)
        await asyncio.to_thread(_served, service, "audio", body.get("model"))
        response_format = _string(body, "response_format", "wav")
        if response_format not in SPEECH_FORMATS:
            raise ConfigError(
                f"response_format={response_format!r}: aigc speaks {', '.join(SPEECH_FORMATS)} "
                "(ogg is Ogg Vorbis; there is no mp3, opus or aac encoder here).",
                field="response_format",
            )
        job = await _submit(service, principal, speech_job(body))
        return await _answer(service, job, lambda done: speech_answer(service, done, response_format))


async def _images(
    service: Service,
    principal: Principal,
    request: Request,
    body: dict[str, Any],
    make_job: Callable[[dict[str, Any], Service], dict[str, Any]],
) -> Response:
    """An image generation or edit: queued as an image job, answered as OpenAI's images (links or base64)."""
    await asyncio.to_thread(_served, service, "image", body.get("model"))
    response_format = _string(body, "response_format", "url")
    if response_format not in ("url", "b64_json"):
        raise ConfigError(f"response_format={response_format!r}: use 'url' or 'b64_json'.", field="response_format")
    output_format = _string(body, "output_format", "png")
    if output_format not in IMAGE_FORMATS:
        raise ConfigError(f"output_format={output_format!r}: use {', '.join(IMAGE_FORMATS)}.", field="output_format")
    job = await _submit(service, principal, await asyncio.to_thread(make_job, body, service))
    base = str(request.base_url)
    return await _answer(service, job, lambda done: image_answer(service, done, response_format, output_format, base))


async def _text(service: Service, principal: Principal, body: dict[str, Any], chat: bool) -> Response:
    """A chat or plain completion: queued as a text job, answered whole or streamed."""
    await asyncio.to_thread(_served, service, "text", body.get("model"))
    request = chat_job(body) if chat else await asyncio.to_thread(completion_job, body, service)
    job = await _submit(service, principal, request)
    if job.request["stream"]:
        return _streaming(service, job, body, chat=chat)
    answer = chat_answer if chat else completion_answer
    return await _answer(service, job, lambda done: answer(service, done, body["model"]))


# --- OpenAI requests as aigc jobs ------------------------------------------------------------------------------
def chat_job(body: dict[str, Any]) -> dict[str, Any]:
    """A chat completion as a text job: the chat is the `messages` knob, its last user turn the prompt."""
    messages = _chat(body.get("messages"))
    prompt = messages[-1]["content"] if messages[-1]["role"] == "user" else ""
    if not prompt.strip():
        raise ConfigError(
            "messages must end with a user turn that says something: that is what the model answers.", field="messages"
        )
    job = _text_job(body, prompt, handled=("messages",))
    job["params"]["messages"] = messages
    return job


def completion_job(body: dict[str, Any], service: Service) -> dict[str, Any]:
    """A plain completion as a text job that continues the prompt: OpenAI's completions never wrap it in a chat
    template, so a backend with aigc's `chat` knob runs with chat=False, unless the request sets `chat` itself."""
    prompt = body.get("prompt")
    if not (isinstance(prompt, str) or (isinstance(prompt, list) and all(isinstance(p, str) for p in prompt))):
        raise ConfigError("prompt must be a string or a list of strings (token ids are not taken).", field="prompt")
    job = _text_job(body, prompt, handled=("prompt",))
    if "chat" not in body and "chat" in _backend(service, job).params:
        job["params"]["chat"] = False
    return job


def _text_job(body: dict[str, Any], prompt: Any, handled: tuple[str, ...]) -> dict[str, Any]:
    job = _job("text", body, prompt, handled=(*handled, *TEXT_KNOBS, "n", "seed", "stream"))
    for field, knob in TEXT_KNOBS.items():
        if body.get(field) is not None:
            value = body[field]
            job["params"][knob] = [value] if field == "stop" and isinstance(value, str) else value
    for field in ("n", "seed"):
        if body.get(field) is not None:
            job[field] = body[field]
    _include_usage(body)  # its shape, checked before the job is queued
    if body.get("stream"):
        job["stream"] = body["stream"]
        if job.get("n", 1) != 1 or not isinstance(prompt, str):
            raise ConfigError("stream: true streams one completion; use n=1 and one prompt.", field="stream")
    return job


def image_job(body: dict[str, Any], service: Service) -> dict[str, Any]:
    """An image generation as an image job; size WxH becomes the backend's own width/height (or size) knobs."""
    if not isinstance(body.get("prompt"), str):
        raise ConfigError("prompt must be a string: what the image shows.", field="prompt")
    job = _job(
        "image", body, body["prompt"], handled=("prompt", "n", "size", "response_format", "output_format", "seed")
    )
    for field in ("n", "seed"):
        if body.get(field) is not None:
            job[field] = body[field]
    size = body.get("size")
    if size not in (None, "auto"):
        job["params"].update(_size_knobs(service, job, size))
    return job


def edit_job(body: dict[str, Any], service: Service) -> dict[str, Any]:
    """An image edit (openai_edits.edit_body's body) as an image job: image_job's, with the form's text knobs read
    by the backend's own Params, on a backend that inpaints (one with a mask knob)."""
    from .openai_edits import typed_knobs

    job = image_job(body, service)
    cls = _backend(service, job)
    if "mask" not in cls.params:
        raise ConfigError(
            f"model={body['model']!r} does not edit images (the {cls.family} backend takes no mask); name a "
            "Stable Diffusion model from /v1/models.",
            field="model",
        )
    job["params"] = typed_knobs(job["params"], cls.params)
    return job


def speech_job(body: dict[str, Any]) -> dict[str, Any]:
    """Speech as an audio job. The voice is the model: aigc's voices are its speech models (/v1/models)."""
    if not isinstance(body.get("input"), str):
        raise ConfigError("input must be a string: the text to speak.", field="input")
    voice = body.get("voice")
    if voice not in (None, "default", body.get("model")):
        raise ConfigError(
            f"voice={voice!r}: each of this server's voices is a model; pass the voice's id from "
            "/v1/models as model, and voice='default'.",
            field="voice",
        )
    job = _job(
        "audio", body, body["input"], handled=("input", "voice", "response_format", "speed", "stream_format", "seed")
    )
    if _string(body, "stream_format", None) not in (None, "audio"):
        raise ConfigError("stream_format: only 'audio' (the whole file) is made here.", field="stream_format")
    if body.get("speed") is not None:
        job["params"]["speed"] = body["speed"]
    if body.get("seed") is not None:
        job["seed"] = body["seed"]
    if job.get("backend") is None and job.get("model") is None:
        job["backend"] = "speech"
    return job


def _job(kind: str, body: dict[str, Any], prompt: Any, handled: tuple[str, ...]) -> dict[str, Any]:
    """The fields every OpenAI request shares as a job: model, aigc's own fields, and the rest as knobs."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ConfigError("model is required: an id from /v1/models, or 'default'.", field="model")
    job: dict[str, Any] = {
        "type": "generate",
        "kind": kind,
        "prompt": prompt,
        "model": None if model == "default" else model,
        "params": {},
    }
    for name, value in body.items():
        if name in ("model", *handled) or name in IGNORED or value is None:
            continue
        if name in UNSUPPORTED:
            if value not in (False, 0, "", [], {}, {"type": "text"}, "auto", "none"):
                raise ConfigError(f"{name}: aigc does not do {UNSUPPORTED[name]}; leave {name} out.", field=name)
        elif name in OWN_FIELDS:
            job[name] = value
        else:
            job["params"][name] = value  # a backend knob, checked like any other (an unknown one is named)
    return job


def _string(body: dict[str, Any], name: str, default: str | None) -> str | None:
    """An OpenAI field that is text (absent, null or empty: `default`), checked for its type before it is compared
    or looked up: a list or an object there is a 400 naming the field, never a 500."""
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, not {type(value).__name__}.", field=name)
    return value or default


def _include_usage(body: dict[str, Any]) -> bool:
    """stream_options.include_usage, with stream_options an object (or null) and include_usage true or false."""
    options = body.get("stream_options")
    if options is None:
        return False
    usage = options.get("include_usage") if isinstance(options, dict) else None
    if not isinstance(options, dict) or not isinstance(usage, (bool, type(None))):
        raise ConfigError('stream_options must be an object such as {"include_usage": true}.', field="stream_options")
    return bool(usage)


def _chat(messages: Any) -> list[dict[str, str]]:
    """OpenAI's messages as aigc's: text content (parts joined), developer turns as system turns."""
    if not isinstance(messages, list) or not messages:
        raise ConfigError("messages must be a non-empty list of {role, content} turns.", field="messages")
    turns = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if not isinstance(role, str) or role not in ROLES:
            raise ConfigError(
                f"messages[{index}].role={role!r}: aigc answers system, developer, user and assistant "
                "turns (no tool turns).",
                field="messages",
            )
        content = message.get("content")
        if isinstance(content, list):
            if not all(
                isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
            ):
                raise ConfigError(f"messages[{index}].content: only text parts are read here.", field="messages")
            content = "".join(part["text"] for part in content)
        if not isinstance(content, str):
            raise ConfigError(f"messages[{index}].content must be text.", field="messages")
        turns.append({"role": ROLES[role], "content": content})
    return turns


def _size_knobs(service: Service, job: dict[str, Any], size: Any) -> dict[str, int]:
    parts = size.lower().split("x") if isinstance(size, str) else []
    # ASCII digits only: "²".isdigit() is True, but int("²") fails
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() and 0 < int(p) <= 8192 for p in parts):
        raise ConfigError(f"size={size!r}: write WIDTHxHEIGHT, e.g. '512x512', or 'auto'.", field="size")
    width, height = int(parts[0]), int(parts[1])
    cls = _backend(service, job)
    if "width" in cls.params and "height" in cls.params:
        return {"width": width, "height": height}
    if "size" in cls.params and width == height:
        return {"size": width}
    raise ConfigError(f"size={size!r}: this model makes square images; use e.g. '{width}x{width}'.", field="size")


def _backend(service: Service, job: dict[str, Any]) -> GeneratorClass:
    """The generator class the job will run on (its backend, else the one its model fits, else the kind's
    default), to read the knobs it declares."""
    from ..runtime import registry
    from .jobs import model_reference

    return registry.get(job["kind"], job.get("backend"), model_reference(job["model"], service.places)).load()


def _served(service: Service, kind: str, model: Any) -> None:
    """OpenAI's answer to a model this server does not have (gpt-4o, dall-e-3, tts-1...): a 404 `model_not_found`
    listing the ids it has for this route's kind; never a mapping onto one of aigc's models. An id of /v1/models,
    or a Hub id (the server may hold it in its cache), goes on to the usual checks. Blocking (it reads files)."""
    from .jobs import HUB_ID

    if not isinstance(model, str) or not model or HUB_ID.match(model):
        return  # no model is _job's ConfigError; a Hub id is looked for in the cache
    served = served_models(service)
    if model in {entry["id"] for entry in served}:
        return
    ids = [entry["id"] for entry in served if _of_kind(service, kind, entry)]
    listed = ", ".join(ids[:MAX_LISTED]) + (f" and {len(ids) - MAX_LISTED} more" if len(ids) > MAX_LISTED else "")
    raise Refusal(
        404,
        f"model {model!r} is not served here; this server's {kind} models: {listed} (GET {API}/models lists them all)",
        code="model_not_found",
        field="model",
        aigc_type="ConfigError",
        openai_type="invalid_request_error",
    )  # OpenAI's own type for an unknown model's 404


def _of_kind(service: Service, kind: str, entry: dict[str, Any]) -> bool:
    """Whether a /v1/models entry makes `kind`: 'default' does, a pack by its kind, a --models name when one of
    the kind's backends runs it (read from its files, as registry.pick reads them; nothing loads)."""
    from ..errors import AIGCError
    from ..runtime import registry

    if entry["id"] == "default":
        return True
    if entry["aigc_kind"] is not None:
        return entry["aigc_kind"] == kind
    try:
        registry.pick(kind, str(service.places.models / entry["id"]))
    except (AIGCError, OSError, ValueError):
        return False
    return True


# --- jobs as OpenAI answers -------------------------------------------------------------------------------------
def chat_answer(service: Service, job: Job, model: str) -> dict[str, Any]:
    outputs = _texts(service, job)
    return {
        "id": f"chatcmpl-{job.id}",
        "object": "chat.completion",
        "created": int(job.created),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": reason,
            }
            for i, (text, reason, _) in enumerate(outputs)
        ],
        "usage": _usage(outputs),
        "aigc": _extra(service, job),
    }


def completion_answer(service: Service, job: Job, model: str) -> dict[str, Any]:
    outputs = _texts(service, job)
    return {
        "id": f"cmpl-{job.id}",
        "object": "text_completion",
        "created": int(job.created),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {"index": i, "text": text, "logprobs": None, "finish_reason": reason}
            for i, (text, reason, _) in enumerate(outputs)
        ],
        "usage": _usage(outputs),
        "aigc": _extra(service, job),
    }


def image_answer(service: Service, job: Job, response_format: str, output_format: str, base: str) -> dict[str, Any]:
    from ..media.assets import load

    data = []
    for row in service.store.assets_of(job.id):
        if response_format == "b64_json":
            path = service.settings.data / row.path
            raw = path.read_bytes() if output_format == "png" else load(path).to_bytes(output_format)
            data.append({"b64_json": base64.b64encode(raw).decode("ascii"), "revised_prompt": None})
        else:
            converted = f"&format={output_format}" if output_format != "png" else ""
            data.append(
                {
                    "url": f"{base.rstrip('/')}{API}/assets/{row.id}?{service.signer.query(row.id)}{converted}",
                    "revised_prompt": None,
                }
            )
    return {"created": int(job.created), "data": data, "output_format": output_format, "aigc": _extra(service, job)}


def speech_answer(service: Service, job: Job, response_format: str) -> Response:
    import numpy as np

    from ..media.assets import load

    row = service.store.assets_of(job.id)[0]
    path = service.settings.data / row.path
    if response_format == "wav":
        raw = path.read_bytes()
    elif response_format == "pcm":  # 16-bit signed little-endian mono at the voice's own rate
        audio = load(path).data
        raw = (np.clip(audio.samples, -1, 1) * 32767).astype("<i2").tobytes()
        return Response(
            raw,
            media_type=SPEECH_FORMATS["pcm"],
            headers={"X-Sample-Rate": str(audio.sample_rate), "X-Aigc-Job": job.id},
        )
    else:
        raw = load(path).to_bytes(response_format)
    return Response(raw, media_type=SPEECH_FORMATS[response_format], headers={"X-Aigc-Job": job.id})


def served_models(service: Service) -> list[dict[str, Any]]:
    """What `model` may name: 'default' (each endpoint's default model), the packs installed here, and the
    models in the server's --models directory."""
    from ..runtime.inventory import pack_rows

    def entry(model_id: str, kind: str | None) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "aigc", "aigc_kind": kind}

    models = [entry("default", None)]
    models += [
        entry(ref, kind)
        for ref, kind, installed, *_ in pack_rows()
        if installed == "yes" and kind in ("text", "image", "audio")
    ]
    directory = service.places.models
    if directory is not None and directory.is_dir():
        models += [entry(path.name, None) for path in sorted(directory.iterdir())]
    return models


def _texts(service: Service, job: Job) -> list[tuple[str, str, dict[str, Any]]]:
    from ..storage import read_text

    outputs = []
    for row in service.store.assets_of(job.id):
        info = row.record.get("info") or {}
        reason = "length" if info.get("finish_reason") == "length" else "stop"
        outputs.append((read_text(service.settings.data / row.path, "asset"), reason, info))
    return outputs


def _usage(outputs: list[tuple[str, str, dict[str, Any]]]) -> dict[str, int]:
    prompt = sum(info.get("prompt_tokens", 0) for _, _, info in outputs[:1])
    completion = sum(info.get("new_tokens", 0) for _, _, info in outputs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _extra(service: Service, job: Job) -> dict[str, Any]:
    """aigc's own part of an answer: the job, its assets with their seeds and scores, who it was batched with."""
    return {
        "job": job.id,
        "merged_with": job.merged,
        "assets": [
            {"id": a.id, "seed": a.record.get("seed"), "score": a.record.get("score")}
            for a in service.store.assets_of(job.id)
        ],
    }


# --- plumbing -----------------------------------------------------------------------------------------------------
async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json_body(await request.body())  # the server's one body reader: nesting bounded
    except ConfigError:
        raise
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise ConfigError("the body must be a JSON object (Content-Type: application/json).")
    return body


async def _submit(service: Service, principal: Principal, job: dict[str, Any]) -> Job:
    request = service.parse(job)
    submitted, _ = await asyncio.to_thread(service.submit, principal, request)
    return submitted


async def _answer(service: Service, job: Job, answer: Callable[[Job], Any]) -> Response:
    """Wait for the job (it keeps its place in /v1/jobs if the client goes), then answer, or say why it failed."""
    done = await service.finished(job.id)
    if done.state == "done":
        result = await asyncio.to_thread(answer, done)
        return result if isinstance(result, Response) else JSONResponse(result)
    status, error = _failure(done.id, done.state, done.error)
    return error_response(None, status, error["aigc_type"], error["message"], error["field"])


def _failure(job_id: str, state: str, stored: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
    """A failed or cancelled job as an HTTP status and the one error shape. A job's stored error names aigc's
    type in `type` (job records are not HTTP errors); here it becomes `aigc_type`, beside OpenAI's category."""
    stored = stored or {"type": "Cancelled", "message": f"job {job_id} was cancelled."}
    aigc_type = str(stored.get("type") or "GenerationError")
    status = 409 if state == "cancelled" else FAILED_AS.get(aigc_type, 500)
    return status, error_body(status, aigc_type, str(stored.get("message") or ""), stored.get("field"))


def _streaming(service: Service, job: Job, body: dict[str, Any], chat: bool) -> StreamingResponse:
    include_usage = _include_usage(body)
    return StreamingResponse(
        _chunks(service, job, body["model"], chat, include_usage),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Aigc-Job": job.id},
    )


async def _chunks(service: Service, job: Job, model: str, chat: bool, include_usage: bool) -> AsyncIterator[str]:
    """The job's "delta" events as OpenAI stream chunks, then the finish reason, then `data: [DONE]`."""
    head = {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{job.id}",
        "created": int(job.created),
        "model": model,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "system_fingerprint": None,
    }

    def chunk(piece: str, reason: str | None = None, role: bool = False) -> str:
        if chat:
            delta = {"role": "assistant", "content": piece} if role else ({"content": piece} if piece else {})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": piece, "logprobs": None, "finish_reason": reason}
        return _sse({**head, "choices": [choice]})

    if chat:
        yield chunk("", role=True)
    after, sent = 0, ""
    while True:
        events = await asyncio.to_thread(service.store.events_after, after, job=job.id)
        for event in events:
            after = event["id"]
            if event["type"] == "delta":
                sent += event["data"]["text"]
                yield chunk(event["data"]["text"])
            elif event["type"] in ("done", "failed", "cancelled"):
                async for line in _ending(service, job.id, event, sent, chunk, head, include_usage):
                    yield line
                return
        if not events:
            await asyncio.sleep(0.05)


async def _ending(
    service: Service,
    job_id: str,
    event: dict[str, Any],
    sent: str,
    chunk: Callable[..., str],
    head: dict[str, Any],
    include_usage: bool,
) -> AsyncIterator[str]:
    if event["type"] != "done":
        yield _sse({"error": _failure(job_id, event["type"], event["data"].get("error"))[1]})
        return
    job = await asyncio.to_thread(service.store.get, job_id)
    assert job is not None  # the job these events came from (the store deletes no job)
    outputs = await asyncio.to_thread(_texts, service, job)
    text, reason, _ = outputs[0]
    if text.startswith(sent) and len(text) > len(sent):  # what was not streamed (a worker that cannot stream)
        yield chunk(text[len(sent) :])
    yield chunk("", reason)
    if include_usage:
        yield _sse({**head, "choices": [], "usage": _usage(outputs)})
    yield "data: [DONE]\n\n"


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"
