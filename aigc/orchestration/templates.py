"""Prompt templates of workflows and recipes: plain `{name}` placeholders, nothing more.

Python's str.format is not used: it reads `{name:>900000000}` as "pad to 900 MB" and `{}` or `{0}` as
positions, so a recipe could crash or exhaust memory. Here a placeholder is `{` + a name + `}`; `{{` and
`}}` are literal braces; anything else is an error that says where it is.
"""

from __future__ import annotations

import re

from ..errors import ConfigError

NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TOKEN = re.compile(r"\{\{|\}\}|\{(" + NAME + r")\}|[{}]")


def placeholders(template: str) -> list[str]:
    """The names a template refers to, in order of first use; a ConfigError for any other use of braces."""
    names: list[str] = []
    for match in _TOKEN.finditer(template):
        token = match.group()
        if token in ("{{", "}}"):
            continue
        if match.group(1) is None:
            raise ConfigError(_explain(template, match.start()), field="prompt")
        if match.group(1) not in names:
            names.append(match.group(1))
    return names


def render(template: str, values: dict[str, str]) -> str:
    """The template with each `{name}` replaced by its value (values are inserted as they are, never parsed)."""
    placeholders(template)  # the same errors as checking it

    def fill(match: re.Match) -> str:
        token = match.group()
        if token in ("{{", "}}"):
            return token[0]
        return str(values[match.group(1)])

    return _TOKEN.sub(fill, template)


def _explain(template: str, at: int) -> str:
    snippet = template[max(0, at - 10) : at + 15].replace("\n", " ")
    return (
        f"the prompt template has a stray or malformed brace at character {at + 1} (…{snippet}…); placeholders "
        "are {name} (letters, digits, underscores), and {{ or }} stand for a literal brace."
    )
