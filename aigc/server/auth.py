"""Who is asking: bearer tokens from a file of `name token [admin]` lines (or $AIGC_TOKEN), compared in constant
time. Without tokens the server is a single user's ("local", an admin), and binds to loopback only."""

from __future__ import annotations

import hmac
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..scoring.ratings import USER

LOCAL = "local"


@dataclass(frozen=True)
class Principal:
    name: str
    admin: bool


@dataclass(frozen=True)
class Tokens:
    """The server's users; an empty table means "no tokens": only loopback, one local user."""

    entries: tuple[tuple[str, str, bool], ...] = ()

    @classmethod
    def load(cls, token_file: Path | None) -> Tokens:
        entries: list[tuple[str, str, bool]] = []
        if token_file is not None:
            try:
                lines = token_file.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as error:
                raise ConfigError(f"cannot read --token-file {token_file}: {error}") from None
            for number, line in enumerate(lines, 1):
                parts = line.split("#", 1)[0].split()
                if not parts:
                    continue
                if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "admin") or len(parts[1]) < 16:
                    raise ConfigError(
                        f"{token_file}:{number}: write `name token` or `name token admin`, with a token "
                        "of at least 16 characters (e.g. from `python -c 'import secrets; "
                        "print(secrets.token_urlsafe())'`)."
                    )
                if not USER.fullmatch(parts[0]) or len(parts[0]) > 100:
                    raise ConfigError(
                        f"{token_file}:{number}: a user name is 1-100 letters, digits and . _ @ + - "
                        "(it names the user's jobs, ratings and taste)."
                    )
                entries.append((parts[0], parts[1], len(parts) == 3))
        env = os.environ.get("AIGC_TOKEN")
        if env:
            if len(env) < 16:
                raise ConfigError("AIGC_TOKEN must be at least 16 characters.")
            entries.append(("admin", env, True))
        names = [name for name, _, _ in entries]
        if len(set(names)) != len(names):
            raise ConfigError("two tokens share a name; give every user their own name.")
        return cls(tuple(entries))

    @property
    def required(self) -> bool:
        return bool(self.entries)

    def who(self, authorization: str | None) -> Principal | None:
        """The user an `Authorization: Bearer <token>` header names, or None."""
        if not self.entries:
            return Principal(LOCAL, True)
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        found = None
        for name, secret, admin in self.entries:  # compare with every entry: no timing hint of which one matched
            if hmac.compare_digest(secret.encode(), token.strip().encode()):
                found = Principal(name, admin)
        return found


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, tokens: Tokens, insecure: bool) -> str | None:
    """None if serving on `host` is allowed; else why not (what the CLI prints). A warning string when insecure."""
    if is_loopback(host) or tokens.required:
        return None
    if insecure:
        return "warning"
    raise ConfigError(
        f"--host {host} would let anyone on the network use this server without a token; give "
        "--token-file FILE (lines `name token [admin]`) or AIGC_TOKEN, or pass --insecure if you mean it."
    )


class Signer:
    """Signed asset links (what /v1/images/generations answers with url, and what a page's <img> can load): the
    asset id and an expiry, HMAC'd with a secret kept in the data directory, good without a token until then."""

    def __init__(self, data: Path) -> None:
        import secrets

        from ..storage import write_atomic

        path = data / ".url-secret"
        if not path.exists():
            write_atomic(path, secrets.token_hex(32).encode(), mode=0o600)
        self._key = path.read_bytes().strip()

    def sign(self, asset_id: str, expires: int) -> str:
        return hmac.new(self._key, f"{asset_id}:{expires}".encode(), "sha256").hexdigest()[:40]

    def query(self, asset_id: str, valid_s: int = 3600) -> str:
        import time

        expires = int(time.time()) + valid_s
        return f"expires={expires}&signature={self.sign(asset_id, expires)}"

    def valid(self, asset_id: str, expires: int | None, signature: str | None) -> bool:
        import time

        if expires is None or signature is None or expires < time.time():
            return False
        return hmac.compare_digest(self.sign(asset_id, expires), signature)
