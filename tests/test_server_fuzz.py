"""A fuzzing pass over the server's own OpenAPI schema (schemathesis's strategies, run by Hypothesis), against a
real `aigc serve` subprocess: every operation, with bodies, parameters and headers that fit the schema and many
that do not, must answer anything but a 5xx, in the one error shape. Bounded: a fixed number of examples per
operation and mode, derandomized, so CI runs the same requests every time."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip(
    "schemathesis", reason="the fuzzing pass needs schemathesis (pip install -e '.[dev]')"
)
from hypothesis import HealthCheck, given, settings  # noqa: E402  (schemathesis brings Hypothesis)
from hypothesis.errors import Unsatisfiable  # noqa: E402
from serving import served_models, server  # noqa: E402

EXAMPLES = 25  # per operation and generation mode: 27 operations x 2 modes -> some 1,300 requests, ~1 min
STREAMS = ("/events",)  # event streams stay open while a job lives: not a request-answer operation


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_gpt2, tiny_dcgan):
    models = served_models(tmp_path_factory.mktemp("fuzz-models"), tiny_gpt2, tiny_dcgan)
    # a small queue: requests that happen to be valid jobs are refused with 429 once two are waiting
    with server(tmp_path_factory.mktemp("fuzz") / "data", models, "--queue-per-owner", "2") as (url, _):
        yield url


def _operations(url: str) -> list:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    return [op for op in operations if not op.path.endswith(STREAMS)]


def _answered(case, url: str) -> None:
    response = case.call(base_url=url, timeout=60)
    where = f"{case.method} {case.formatted_path} -> {response.status_code}"
    assert response.status_code < 500, f"{where}: {response.text[:300]}"
    content_type = (response.headers.get("content-type") or [""])[0]  # schemathesis keeps each header as a list
    if response.status_code >= 400 and content_type.startswith("application/json"):
        error = response.json().get("error")
        assert isinstance(error, dict) and error.get("message") and error.get("type"), f"{where}: {response.text[:300]}"


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_request_is_answered_with_a_server_error(served, mode):
    operations = _operations(served)
    assert len(operations) >= 20, [op.label for op in operations]  # the schema lists the API, not a stub of it
    with_bodies = {op.path for op in operations if len(op.body)}  # so the bodies are fuzzed, not only parameters
    assert with_bodies >= {
        "/v1/jobs",
        "/v1/score",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/audio/speech",
        "/v1/assets/zip",
        "/v1/ratings/prefer",
        "/v1/control/preview",
    }, with_bodies
    for operation in operations:
        strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case) -> None:
            _answered(case, served)

        try:
            fuzz()
        except Unsatisfiable:  # nothing of this operation can be made invalid (no parameters, no body)
            assert mode == "negative", operation.label
