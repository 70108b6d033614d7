"""Image thumbnails, made once per size and kept beside the data (WebP: small, and every browser shows it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def thumbnail_of(data: Path, row: Any, size: int) -> Path:
    """The thumbnail of an image asset at most `size` px a side (made on first request, then served)."""
    from PIL import Image

    from ..storage import write_atomic

    path = data / "thumbnails" / f"{row.id}-{size}.webp"
    if path.is_file():
        return path
    import io

    with Image.open(data / row.path) as image:
        image = image.convert("RGB")
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="WEBP", quality=85)
    return write_atomic(path, buffer.getvalue())
