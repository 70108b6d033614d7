"""The queue's edges against a real `aigc serve` subprocess (issue 25): a per-owner limit that holds under a burst of
concurrent POSTs, --private owners who learn nothing of each other's jobs (not even through merged calls), an
Idempotency-Key that refuses another request, a damaged or locked database (one line at start, a 503 while locked),
clients that send too slowly or go away mid-body, and temporary files a kill left behind."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serving import AIGC, free_port, served_models, server, wait_done  # noqa: E402

ROOT, BOB, CY = "root-token-0123456789abcdef", "bob-token-0123456789abcdef", "cy-token-0123456789abcdefgh"
AS_ROOT, AS_BOB, AS_CY = ({"Authorization": f"Bearer {token}"} for token in (ROOT, BOB, CY))
FACE = {"kind": "image", "prompt": "a face", "backend": "gan", "model": "tiny-gan.pth"}
# a batch whose 5,000 rows take a moment to check before it is queued: the window in which a count of the owner's jobs
# followed by a separate insert let a burst of POSTs past the limit
ROWS = {"type": "batch", "kind": "image", "backend": "gan", "model": "tiny-gan.pth", "rows": ["a face"] * 5000}


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_gpt2, tiny_dcgan):
    return served_models(tmp_path_factory.mktemp("served"), tiny_gpt2, tiny_dcgan)


@pytest.fixture()
def tokens(tmp_path) -> Path:
    path = tmp_path / "team.tokens"
    path.write_text(f"root {ROOT} admin\nbob {BOB}\ncy {CY}\n")
    return path


def hold_the_worker(url: str, headers: dict | None = None) -> str:
    """A long job, running, that keeps the one worker busy while a test queues the jobs it wants waiting."""
    job = httpx.post(
        f"{url}/v1/jobs",
        headers=headers,
        json={"kind": "text", "prompt": "x", "model": "tiny-gpt2", "n": 1000, "params": {"max_new_tokens": 100}},
    ).json()
    deadline = time.time() + 120
    while httpx.get(f"{url}/v1/jobs/{job['id']}", headers=headers).json()["state"] == "pending":
        assert time.time() < deadline, "the worker never took the long job"
        time.sleep(0.05)
    return job["id"]


def log_of(data: Path, url: str) -> Path:
    """The server's stderr (tests/serving.py writes it beside the data directory)."""
    return data.parent / f"{data.name}-serve-{url.rsplit(':', 1)[1]}.log"


def test_the_queue_limit_holds_for_thirty_concurrent_posts(tmp_path, models, tokens):
    with server(tmp_path / "data", models, "--token-file", str(tokens), "--queue-per-owner", "3") as (url, _):
        blocker = hold_the_worker(url, AS_ROOT)  # root's job: bob's three places are all his
        start, answers = threading.Barrier(30), []

        def post(i: int) -> None:
            start.wait()
            answers.append(httpx.post(f"{url}/v1/jobs", json={**ROWS, "seed": i}, headers=AS_BOB, timeout=120))

        threads = [threading.Thread(target=post, args=(i,)) for i in range(30)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [202] * 3 + [429] * 27, statuses
        refused = next(answer for answer in answers if answer.status_code == 429)
        assert refused.json()["error"]["aigc_type"] == "QueueFull" and refused.headers["retry-after"]
        queued = httpx.get(f"{url}/v1/jobs", headers=AS_BOB).json()
        assert queued["total"] == 3
        for job_id in [job["id"] for job in queued["jobs"]] + [blocker]:
            httpx.post(f"{url}/v1/jobs/{job_id}/cancel", headers=AS_ROOT)


def test_a_private_server_names_no_one_elses_job_in_a_list_a_view_an_answer_or_an_event(tmp_path, models, tokens):
    with server(tmp_path / "data", models, "--token-file", str(tokens), "--private") as (url, _):
        blocker = hold_the_worker(url, AS_ROOT)
        bobs = [
            httpx.post(f"{url}/v1/jobs", json={**FACE, "prompt": "bob's face", "seed": 1}, headers=AS_BOB).json()["id"]
        ]
        cys = httpx.post(f"{url}/v1/jobs", json={**FACE, "prompt": "cy's face", "seed": 9}, headers=AS_CY).json()["id"]
        answers = []  # bob's second job through the OpenAI route: its answer says whom it was batched with
        image = threading.Thread(
            target=lambda: answers.append(
                httpx.post(
                    f"{url}/v1/images/generations",
                    headers=AS_BOB,
                    timeout=120,
                    json={
                        "model": "tiny-gan.pth",
                        "backend": "gan",
                        "prompt": "bob's other face",
                        "seed": 2,
                        "response_format": "b64_json",
                    },
                )
            )
        )
        image.start()
        while httpx.get(f"{url}/v1/jobs", headers=AS_BOB).json()["total"] < 2:
            time.sleep(0.05)
        httpx.post(f"{url}/v1/jobs/{blocker}/cancel", headers=AS_ROOT)
        image.join(timeout=120)
        assert answers and answers[0].status_code == 200, answers
        bobs.append(answers[0].json()["aigc"]["job"])
        assert answers[0].json()["aigc"]["merged_with"] == [bobs[0]]  # not cy's
        for job_id, headers in ((bobs[0], AS_BOB), (cys, AS_CY)):
            assert wait_done(url, job_id, headers=headers)["state"] == "done"
        events = httpx.get(f"{url}/v1/jobs/{bobs[0]}/events", headers=AS_BOB).text
        assert '"batched_with": 3' in events, events  # the three shared one call: there was something to hide
        assert cys not in events and cys not in everything_bob_heard(url)
        assert bobs[0] not in httpx.get(f"{url}/v1/jobs/{cys}/events", headers=AS_CY).text  # nor cy of bob's
        for mine, other in ((bobs[0], bobs[1]), (bobs[1], bobs[0])):
            assert httpx.get(f"{url}/v1/jobs/{mine}", headers=AS_BOB).json()["merged_with"] == [other]
        assert httpx.get(f"{url}/v1/jobs/{cys}", headers=AS_CY).json()["merged_with"] == []
        listed = httpx.get(f"{url}/v1/jobs", headers=AS_BOB).json()
        assert {job["id"] for job in listed["jobs"]} == set(bobs) and cys not in json.dumps(listed)
        refused = httpx.get(f"{url}/v1/jobs", params={"owner": "cy"}, headers=AS_BOB)
        assert refused.status_code == 403, refused.text
        error = refused.json()["error"]
        assert "--private" in error["message"] and error["type"] == "permission_error"
        assert httpx.get(f"{url}/v1/jobs", params={"owner": "bob"}, headers=AS_BOB).json()["total"] == 2
        assert httpx.get(f"{url}/v1/jobs", params={"owner": "cy"}, headers=AS_ROOT).json()["total"] == 1  # an admin


def everything_bob_heard(url: str) -> str:
    """Bob's event stream (GET /v1/events) from the start up to his two jobs' ends."""
    heard, done = [], 0
    with httpx.stream("GET", f"{url}/v1/events", params={"after": 0}, headers=AS_BOB, timeout=60) as stream:
        for line in stream.iter_lines():
            heard.append(line)
            done += line == "event: done"
            if done == 2 and not line:
                break
    return "\n".join(heard)


def test_an_idempotency_key_used_for_another_request_is_a_409(tmp_path, models):
    with server(tmp_path / "data", models) as (url, _):
        key = {"Idempotency-Key": "order-42"}
        first = httpx.post(f"{url}/v1/jobs", json={**FACE, "seed": 1}, headers=key)
        again = httpx.post(f"{url}/v1/jobs", json={"seed": 1, "n": 1, **FACE}, headers=key)  # the same, said otherwise
        assert first.status_code == 202 and again.status_code == 200 and again.json()["id"] == first.json()["id"]
        other = httpx.post(f"{url}/v1/jobs", json={**FACE, "seed": 2}, headers=key)
        assert other.status_code == 409, other.text
        error = other.json()["error"]
        assert error["type"] == "conflict_error" and error["code"] == "idempotency_key_reused"
        assert "order-42" in error["message"] and "another request" in error["message"]
        assert httpx.get(f"{url}/v1/jobs").json()["total"] == 1  # no new job
        assert (
            httpx.post(f"{url}/v1/jobs", json={**FACE, "seed": 2}, headers={"Idempotency-Key": "order-43"}).status_code
            == 202
        )


def _damaged_database(path: Path) -> None:
    """A real aigc.db (the server's schema, a job and 4,000 assets) with pages of its assets table overwritten, so
    it opens and its jobs read, but a gallery listing meets the garbage."""
    from aigc.server.store import Store

    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO jobs (id, owner, type, kind, request, state, created, expected, seq) VALUES "
        "('j1', 'local', 'generate', 'image', '{}', 'done', 1, 4000, 1)"
    )
    db.executemany(
        "INSERT INTO assets (id, job, position, kind, path, media_type, size, etag, record, created, owner,"
        " prompt, score) VALUES (?, 'j1', ?, 'image', 'x.png', 'image/png', 1, 'e', ?, ?, 'local', ?, ?)",
        [(f"{i:08x}", i, json.dumps({"prompt": f"face {i}"}), 1000 + i, f"face {i}", i / 4000) for i in range(4000)],
    )
    db.commit()
    db.close()
    size = path.stat().st_size
    with open(path, "r+b") as file:
        for offset in range(size // 3 // 4096 * 4096, size * 2 // 3, 4096 * 3):  # every third page of the middle
            file.seek(offset)
            file.write(os.urandom(4096))


def test_a_damaged_database_is_refused_at_start_with_one_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _damaged_database(data / "aigc.db")
    started = subprocess.Popen(
        [AIGC, "serve", "--port", str(free_port()), "--data", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = started.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        started.kill()
        raise AssertionError("aigc serve started on a damaged database") from None
    assert started.returncode == 1 and "Traceback" not in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1 and str(data / "aigc.db") in stderr, stderr
    assert "damaged" in stderr and "restore it from a backup, or move it away" in stderr
    (data / "aigc.db").write_bytes(os.urandom(8192))  # not a database at all: the same line
    refused = subprocess.run(
        [AIGC, "serve", "--port", str(free_port()), "--data", str(data)], capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "damaged" in refused.stderr and "backup" in refused.stderr


def test_a_database_another_program_locks_is_a_503_then_the_server_goes_on(tmp_path, models):
    data = tmp_path / "data"
    with server(data, models, "--merge-outputs", "1") as (url, _):  # no merged call to fall back from a failure
        running = hold_the_worker(url)  # a job that writes its progress several times a second
        while httpx.get(f"{url}/v1/jobs/{running}").json()["progress"].get("stage") != "decode":
            time.sleep(0.05)  # its model loaded: it is generating, and reporting
        holder = sqlite3.connect(data / "aigc.db", isolation_level=None, timeout=30)
        holder.execute("BEGIN EXCLUSIVE")  # a sqlite3 shell or a backup tool, mid-transaction
        try:
            answer = httpx.post(f"{url}/v1/jobs", json=FACE, timeout=30)  # a stall past this fails the test
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["aigc_type"] == "Busy" and "locked" in answer.json()["error"]["message"]
            assert int(answer.headers["retry-after"]) > 0
            assert httpx.get(f"{url}/v1/jobs", timeout=30).json()["total"] == 1  # reading goes on meanwhile
            time.sleep(3)  # longer than a request waits: the worker's writes wait on
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert httpx.get(f"{url}/v1/jobs/{running}").json()["state"] == "running"  # not failed by the lock
        httpx.post(f"{url}/v1/jobs/{running}/cancel")
        ended = wait_done(url, running)
        assert ended["state"] == "cancelled" and ended["error"] is None, ended
        posted = httpx.post(f"{url}/v1/jobs", json=FACE, timeout=30)
        assert posted.status_code == 202 and wait_done(url, posted.json()["id"])["state"] == "done"
        assert httpx.get(f"{url}/v1/jobs").json()["total"] == 2  # the refused POST queued nothing
    log = log_of(data, url).read_text()
    assert "Traceback" not in log and log.count("locked by another program") == 1, log


def _lines_within(log: Path, words: str, seconds: float, start: int = 0) -> int:
    """How many lines of the log past `start` hold `words`, once at least one does (or `seconds` pass)."""
    deadline = time.time() + seconds
    while True:
        found = sum(words in line for line in log.read_text()[start:].splitlines())
        if found or time.time() > deadline:
            return found
        time.sleep(0.1)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes `sock` within `seconds` (reading whatever it sends until then)."""
    sock.settimeout(seconds)
    deadline = time.time() + seconds
    try:
        while time.time() < deadline:
            if not sock.recv(4096):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def test_slow_clients_are_cut_off_and_one_gone_mid_body_is_one_log_line(tmp_path, models):
    data = tmp_path / "data"
    with server(data, models, "--request-timeout", "3") as (url, _):
        port, log = int(url.rsplit(":", 1)[1]), log_of(data, url)
        half = socket.create_connection(("127.0.0.1", port))
        half.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and then nothing
        silent = socket.create_connection(("127.0.0.1", port))  # connects and says nothing at all
        trickle = socket.create_connection(("127.0.0.1", port))
        trickle.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100000\r\n\r\n{"kind": '
        )  # a body that never comes
        for sock in (half, silent, trickle):
            with sock:
                assert _closed_within(sock, 30), "the server held a slow client's connection"
        # the trickle's route hears it gone a moment after its connection closes: one line, once it is written
        assert _lines_within(log, "after 9 of 100,000 bytes", 30) == 1, log.read_text()
        before = log.read_text()
        gone = socket.create_connection(("127.0.0.1", port))
        gone.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100000\r\n\r\n{"kind": "'
        )  # 10 bytes of 100,000, then away
        gone.close()
        assert httpx.get(f"{url}/health").status_code == 200  # the server goes on
        assert _lines_within(log, "the client went away", 30, start=len(before)) == 1, log.read_text()
        time.sleep(1)  # and nothing more comes of it
        added = log.read_text()[len(before) :]
        assert "Traceback" not in added and len(added.strip().splitlines()) == 1, added
        assert httpx.post(f"{url}/v1/jobs", json={**FACE, "prompt": "x" * 10_000}).status_code == 202  # whole: fine
    assert "Traceback" not in log.read_text()


def test_temporary_files_a_kill_left_are_removed_at_start_and_nothing_else(tmp_path, models):
    data = tmp_path / "data"
    with server(data, models) as (url, _):
        job = wait_done(url, httpx.post(f"{url}/v1/jobs", json={**FACE, "n": 2}).json()["id"])
        files = {a["id"]: httpx.get(f"{url}{a['url']}").content for a in job["assets"]}
        left = [
            data / "assets" / job["id"] / ".000001.png.abc123.part",
            data / "jobs" / "j1" / "run" / ".x.txt.q.part",
            data / "thumbnails" / ".a-256.webp.zz.part",
            data / ".url-secret.r4nd.part",
        ]
        kept = [data / "assets" / job["id"] / ".keep", data / "jobs" / "j1" / "run" / "notes.part"]
        for path in left + kept:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"half an image")
        second = subprocess.run(
            [AIGC, "serve", "--port", str(free_port()), "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1 and "served by another aigc serve" in second.stderr
        assert all(path.exists() for path in left)  # a second server touches nothing of the first's
    with server(data, models) as (url, _):
        assert not [path for path in left if path.exists()]
        assert all(path.read_bytes() == b"half an image" for path in kept)
        assert {a: httpx.get(f"{url}/v1/assets/{a}").content for a in files} == files  # the real assets, untouched
