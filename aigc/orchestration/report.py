"""A run's HTML page: the chain step by step, with text, images and audio players. Opens from disk."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..storage import write_atomic

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
.step{border-left:4px solid #68a;padding:0 1em;margin:1.5em 0}.assets{display:flex;flex-wrap:wrap;gap:1em}
.asset{border:1px solid #ddd;border-radius:6px;padding:.6em;max-width:340px;font-size:.9em}
.asset img{max-width:320px;image-rendering:auto}pre{white-space:pre-wrap}.meta{color:#666;font-size:.8em}"""


def media_html(kind: str, file: str, text: str = "") -> str:
    """How an asset shows on a page, with exactly one link to its file: an image linking to itself, or an audio
    player or the text followed by the file's name as a link.

    The link is always relative ("./name", URL-quoted), so no file name can become a javascript: or remote URL.
    """
    link = html.escape("./" + quote(file))
    label = html.escape(file)
    if kind == "image":
        return f'<a href="{link}" title="{label}"><img loading=lazy src="{link}" alt="{label}"></a>'
    if kind == "audio":
        return f'<audio controls preload=none src="{link}"></audio><a href="{link}">{label}</a>'
    return f'<pre>{html.escape(text)}</pre><a href="{link}">{label}</a>'


def _asset_html(record: dict[str, Any]) -> str:
    body = media_html(record["kind"], record["file"], record.get("text", ""))
    score = f" · score {record['score']:.3f}" if isinstance(record.get("score"), (int, float)) else ""
    parents = ", ".join(p for p in (record.get("workflow") or {}).get("parents", []) if p)
    return (
        f'<div class="asset">{body}<div class="meta">{html.escape(record["workflow"]["id"])} · seed '
        f"{html.escape(str(record['seed']))}{score}{' · from ' + html.escape(parents) if parents else ''}</div>"
        f"<details><summary>prompt</summary><pre>{html.escape(record['prompt'])}</pre></details></div>"
    )


def write_report(run: dict[str, Any], path: Path) -> None:
    parts = [
        f"<!doctype html><meta charset=utf-8><title>aigc run</title><style>{STYLE}</style>",
        f"<h1>aigc run</h1><p class=meta>inputs: {html.escape(str(run['pipeline']['inputs']))} · seed "
        f"{run['pipeline']['seed']} · {run['seconds']} s · aigc {run['aigc']}</p>",
    ]
    for step in run["steps"]:
        cards = [_asset_html(record) for record in step["assets"]]
        parts.append(
            f'<div class="step"><h2>{html.escape(step["name"])}</h2><div class="assets">{"".join(cards)}</div></div>'
        )
    write_atomic(path, "\n".join(parts).encode("utf-8"))
