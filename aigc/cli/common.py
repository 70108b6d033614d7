"""What several commands share: how they show progress, and how they read KEY=VALUE pairs (-p, --set)."""

from __future__ import annotations

from typing import Any

import click


def progress(streaming: bool = False) -> Any:
    """How a command shows its progress: bars on a terminal, a line per stage when stderr is a file or a pipe;
    while text streams to the terminal, lines only (bars would redraw over it) and no token count."""
    from ..console import Console

    return Console(live=False, skip=("decode",)) if streaming else Console()


def own_progress_only() -> None:
    """aigc's rows replace the libraries' own bars (transformers' "Loading weights", the GGUF conversion's, the
    diffusers pipeline's): tqdm and huggingface_hub read these settings once, when first imported, so a command
    that shows progress calls this first, before anything imports them. A user's own TQDM_DISABLE=0 wins."""
    import os

    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def pairs(values: tuple[str, ...], option: str, reserved: tuple[str, ...] = ()) -> dict[str, str]:
    """KEY=VALUE pairs as given (values stay text: each knob's Param reads its own); a key given twice is refused,
    and so is a `reserved` one (a command's own argument, which has an option of its own)."""
    found: dict[str, str] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_") if option == "--param" else key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        if key in found:
            raise click.BadParameter(f"{key} is given twice; give it once", param_hint=option)
        if key in reserved:
            flag = "-n" if key == "n" else f"--{key.replace('_', '-')}"
            raise click.BadParameter(f"{key} is not a backend knob; use {flag}", param_hint=option)
        found[key] = raw
    return found
