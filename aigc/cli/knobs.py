"""The command line's knob options, built from the backends' own Param declarations: a knob a backend (or a
plug-in) declares is a `--knob` option of `aigc generate` and `aigc batch`, with its help and default."""

from __future__ import annotations

from typing import Any

import click

PREFIX = "knob__"  # the options' destination names, kept apart from the commands' own arguments
RESERVED = {
    "seed",
    "model",
    "backend",
    "n",
    "out",
    "json",
    "stream",
    "play",
    "device",
    "dtype",
    "format",
    "kind",
    "best_of",
    "min_score",
    "max_attempts",
    "diverse",
    "library",
    "no_library",
    "param",
    "engine",
    "workers",
    "ray_address",
    "help",
    "version",
    "prompt",
    "prompts",
    "set",
    "replay",
}


class KnobCommand(click.Command):
    """A click command whose knob options are read from the registry the first time they are needed, so
    `aigc --help` never imports a backend."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if not getattr(self, "_knobs_added", False):
            own = {flag for param in self.params for flag in getattr(param, "opts", [])}
            # a command's own option wins over a knob of the same name (batch's --batch-size, say)
            self.params.extend(option for option in knob_options() if option.opts[0] not in own)
            self._knobs_added = True
        return super().get_params(ctx)


def knob_options() -> list[click.Option]:
    """One option per knob name across every registered backend; its help says which backends take it."""
    from ..runtime import registry

    options = []
    for name, declared in registry.knobs().items():
        params = [param for _, param in declared if param.on_command_line]
        if not params or name in RESERVED:
            continue  # a callable knob exists only in Python; a reserved name stays reachable through -p
        flag = "--" + name.replace("_", "-")
        helps: dict[str, dict[str, list[str]]] = {}  # help text -> kind -> backends that declare it so
        for spec, param in declared:
            if param.on_command_line:
                helps.setdefault(param.describe(), {}).setdefault(spec.kind, []).append(spec.name)
        text = " | ".join(
            ", ".join(f"{kind} ({', '.join(names)})" for kind, names in where.items()) + f": {what}"
            for what, where in helps.items()
        )
        first = params[0]
        if first.type == "bool":
            options.append(
                click.Option([f"{flag}/--no-{name.replace('_', '-')}", PREFIX + name], default=None, help=text)
            )
        else:
            options.append(
                click.Option(
                    [flag, PREFIX + name],
                    multiple=first.type in ("strings", "controls"),
                    default=None,
                    help=text,
                    metavar=_metavar(first),
                )
            )
    return options


def given_knobs(arguments: dict[str, Any]) -> dict[str, Any]:
    """The knob options a command line set (not left out), by knob name; values still as typed there."""
    knobs = {}
    for key, value in arguments.items():
        if key.startswith(PREFIX) and value is not None and value != ():
            knobs[key[len(PREFIX) :]] = list(value) if isinstance(value, tuple) else value
    return knobs


def _metavar(param: Any) -> str:
    if param.choices:
        return "[" + "|".join(map(str, param.choices)) + "]"
    return {"int": "INT", "float": "NUMBER", "image": "PATH", "strings": "TEXT", "sides": "PIXELS"}.get(
        param.type, "TEXT"
    )
