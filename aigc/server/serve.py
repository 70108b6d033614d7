"""Start the server: check the options (bind, tokens, directories) in one clear line each, then run uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ConfigError
from ..storage import writable_dir

log = logging.getLogger("aigc.server")


def serve(
    *,
    host: str,
    port: int,
    data: Path,
    token_file: Path | None,
    models: Path | None,
    pipelines: Path | None,
    allowed_hosts: tuple[str, ...] = (),
    cors: tuple[str, ...] = (),
    max_body_mb: int = 16,
    queue_per_owner: int = 100,
    merge_outputs: int = 16,
    engine: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    insecure: bool = False,
    private: bool = False,
    request_timeout: float = 60,
) -> None:
    try:
        import uvicorn

        from .app import Settings, create_app
    except ImportError as error:
        raise ConfigError(
            f"aigc serve needs FastAPI and uvicorn ({error}); install them with `pip install "
            "'aigc[server]'` (make setup does)."
        ) from None
    from .auth import Tokens, check_bind

    if not 0 < request_timeout <= 3600:
        raise ConfigError(
            f"--request-timeout {request_timeout}: give the seconds a request may take to arrive, "
            "more than 0 and at most 3600."
        )
    settings = _settings(
        Settings,
        host=host,
        port=port,
        data=data,
        tokens=Tokens.load(token_file),
        models=models,
        pipelines=pipelines,
        allowed_hosts=allowed_hosts,
        cors=cors,
        max_body_mb=max_body_mb,
        queue_per_owner=queue_per_owner,
    )
    settings.merge_outputs, settings.engine, settings.workers, settings.ray_address = _engine(
        merge_outputs, engine, workers, ray_address
    )
    settings.private = private
    if check_bind(host, settings.tokens, insecure) == "warning":
        log.warning("aigc serve: --insecure on %s: anyone who can reach this port can use the server.", host)
    app = create_app(settings)
    log.warning(
        "aigc serve: http://%s:%d (data in %s; %s)",
        host if ":" not in host else f"[{host}]",
        port,
        settings.data,
        ("tokens required" if settings.tokens.required else "one local user, no tokens")
        + ("; private: each user sees their own" if private else ""),
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        http=bounded_protocol(request_timeout),
    )


def bounded_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol with a bound on how long a request (its headers and its body) may take to arrive,
    counted from its first byte, or from the connection's start: uvicorn 0.54 bounds only the wait between requests
    (timeout_keep_alive) and the size of the headers (h11's 16 KiB), so a client that sent half its headers, or a
    body byte by byte, held its connection and task forever. Past the bound the connection is closed; a route still
    reading that body sees the client gone (body.py logs a line)."""
    import asyncio

    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    arriving = (h11.IDLE, h11.SEND_BODY)  # the client's side of the exchange: a request not yet whole

    class BoundedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            self._arm()  # a request starts (or goes on) arriving
            super().data_received(data)
            if self.conn.their_state not in arriving:
                self._disarm()  # it arrived whole (or the connection is ending)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is None and self.conn.their_state in arriving:
                self._deadline = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.conn.their_state in arriving and not self.transport.is_closing():
                self.transport.close()

    return BoundedH11Protocol


def _settings(
    Settings,
    *,
    host: str,
    port: int,
    data: Path,
    tokens,
    models: Path | None,
    pipelines: Path | None,
    allowed_hosts: tuple[str, ...],
    cors: tuple[str, ...],
    max_body_mb: int,
    queue_per_owner: int,
):
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port} is not a port; use 1-65535.")
    if max_body_mb < 1 or queue_per_owner < 1:
        raise ConfigError("--max-body-mb and --queue-per-owner must be at least 1.")
    if "*" in cors and tokens.required:
        raise ConfigError("--cors-origin '*' with tokens would let any web page use a user's token; list the origins.")
    for name, directory in (("--models", models), ("--pipelines", pipelines)):
        if directory is not None and not directory.is_dir():
            raise ConfigError(f"{name} {directory} is not a directory.")
    if pipelines is None and Path("pipelines").is_dir():
        pipelines = Path("pipelines").resolve()
    hosts = {"localhost", "127.0.0.1", "::1", "[::1]", host, f"[{host}]", *allowed_hosts}
    if host in ("0.0.0.0", "::"):  # every interface: the names and addresses clients may use to reach this machine
        hosts |= _own_names()
    return Settings(
        data=writable_dir(data, "--data").resolve(),
        tokens=tokens,
        models=models,
        pipelines=pipelines,
        allowed_hosts=tuple(sorted(hosts)),
        cors_origins=tuple(cors),
        max_body=max_body_mb * 2**20,
        queue_per_owner=queue_per_owner,
    )


def _engine(
    merge_outputs: int, engine: str, workers: int | None, ray_address: str | None
) -> tuple[int, str, int | None, str | None]:
    from ..limits import get
    from .engines import check

    if not 1 <= merge_outputs <= get("outputs"):
        raise ConfigError(f"--merge-outputs {merge_outputs}: use 1 (no merging) to {get('outputs')}.")
    check(engine, workers, ray_address)
    return merge_outputs, engine, workers, ray_address


def _own_names() -> set[str]:
    import socket

    names = {socket.gethostname(), socket.getfqdn()}
    try:
        names |= set(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    return {n for n in names if n}
