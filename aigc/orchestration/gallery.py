"""A batch's gallery: index.html (thumbnails, players, prompts, scores, a filter) and a contact sheet per prompt."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ..storage import write_atomic
from .report import media_html

PAGE = """<!doctype html><meta charset=utf-8><title>aigc batch</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}}#q{{font-size:1em;padding:.3em;width:24em}}
.grid{{display:flex;flex-wrap:wrap;gap:.8em;margin-top:1em}}.card{{border:1px solid #ddd;border-radius:6px;padding:.5em;
width:260px;font-size:.85em}}.card img{{max-width:256px}}.meta{{color:#666}}
pre{{white-space:pre-wrap;max-height:12em;overflow:auto}}</style>
<h1>aigc batch</h1><p>{count} assets · <input id=q placeholder="filter by prompt, seed or score…" oninput="f()">
<select id=s onchange="f()"><option value=0>any score</option><option value=0.5>score ≥ 0.5</option>
<option value=0.7>score ≥ 0.7</option></select></p><div class=grid>{cards}</div>
<script>function f(){{const q=document.getElementById('q').value.toLowerCase(),s=+document.getElementById('s').value;
for(const c of document.querySelectorAll('.card')){{const ok=c.dataset.text.includes(q)&&(+c.dataset.score>=s);
c.style.display=ok?'':'none'}}}}</script>"""


def _card(record: dict[str, Any], directory: Path) -> str:
    """One asset's card; every value from the manifest is escaped, since a manifest is only a file."""
    path = directory / record["file"]
    kind = record.get("kind")
    text = path.read_text(encoding="utf-8", errors="replace") if kind == "text" and path.is_file() else ""
    body = media_html(str(kind), str(record["file"]), text)
    score = record.get("score") if isinstance(record.get("score"), (int, float)) else None
    shown = f" · score {score:.3f}" if score is not None else ""
    prompt, seed = str(record.get("prompt", "")), html.escape(str(record.get("seed")))
    search = html.escape(f"{prompt} seed {record.get('seed')}{shown}".lower(), quote=True)
    return (
        f'<div class=card data-text="{search}" data-score="{score if score is not None else 1}">{body}'
        f"<div><b>{html.escape(prompt)}</b></div><div class=meta>row {int(record['row'])} · variant "
        f"{int(record['variant'])} · seed {seed}{shown}</div></div>"
    )  # media_html links the file, once


def write_gallery(directory: Path, records: list[dict[str, Any]]) -> None:
    """index.html over every manifest record, and contact-row-N.png for rows with several images."""
    from PIL import Image

    from ..media.sheets import write_contact_sheet

    records = sorted(records, key=lambda r: (r["row"], r["variant"]))
    cards = "".join(_card(r, directory) for r in records)
    write_atomic(directory / "index.html", PAGE.format(count=len(records), cards=cards).encode("utf-8"))
    rows: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("kind") == "image" and (directory / record["file"]).is_file():
            rows.setdefault(record["row"], []).append(record)
    for row, group in rows.items():
        images = []
        for record in group:
            try:
                with Image.open(directory / record["file"]) as image:
                    images.append(image.convert("RGB"))
            except (OSError, ValueError):  # not an image after all (a damaged or foreign file): left off the sheet
                continue
        if images:
            write_contact_sheet(images, directory / f"contact-row-{row}.png")
