"""Contact sheets: many images on one PNG, in a grid, so a set can be judged at a glance."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError

MOST_IMAGES = 100  # a sheet shows the first 100 images: it is for judging at a glance, not an archive
WIDEST = 4096  # pixels; larger cells are shrunk so a sheet stays an ordinary picture
SHEET_KEY = "aigc-contact-sheet"  # the PNG text chunk that marks a sheet as aigc's own, not an asset


def contact_sheet(images: Sequence, columns: int | None = None, gap: int = 4, background: str = "white"):
    """Lay `images` out in a grid (about square unless `columns` is given), each cell the largest image's size
    (shrunk to keep the sheet within 4096 px wide); at most the first 100 images."""
    from PIL import Image

    images = list(images)[:MOST_IMAGES]
    if not images:
        raise ConfigError("a contact sheet needs at least one image.")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    scale = min(1.0, (WIDEST - (columns + 1) * gap) / (columns * max(im.width for im in images)))
    cell_w = max(1, int(max(im.width for im in images) * scale))
    cell_h = max(1, int(max(im.height for im in images) * scale))
    sheet = Image.new("RGB", (columns * cell_w + (columns + 1) * gap, rows * cell_h + (rows + 1) * gap), background)
    for i, image in enumerate(images):
        row, col = divmod(i, columns)
        cell = image.convert("RGB")
        if scale < 1:
            cell = cell.resize((max(1, int(cell.width * scale)), max(1, int(cell.height * scale))))
        sheet.paste(cell, (gap + col * (cell_w + gap), gap + row * (cell_h + gap)))
    return sheet


def write_contact_sheet(images: Sequence, path: str | Path, **layout) -> Path:
    """A contact sheet of `images` saved as a PNG at `path`, atomically (a reader never sees half of it), marked as
    aigc's own sheet so that `aigc score DIR/*.png` and other readers know it is not an asset."""
    import io

    from PIL.PngImagePlugin import PngInfo

    from ..storage import write_atomic

    info = PngInfo()
    info.add_text(SHEET_KEY, f"a contact sheet of {min(len(images), MOST_IMAGES)} images")
    info.add_text("Software", "aigc (contact sheet)")
    buffer = io.BytesIO()
    contact_sheet(images, **layout).save(buffer, format="PNG", pnginfo=info)
    return write_atomic(Path(path), buffer.getvalue())


def is_contact_sheet(path: str | Path) -> bool:
    """Whether `path` is a contact sheet aigc wrote: marked so, or (written before sheets were marked) named as aigc
    names them and holding no asset record. Reads only the PNG's header chunks."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() != ".png":
        return False
    try:
        with Image.open(path, formats=["PNG"]) as image:
            text = dict(getattr(image, "text", {}))
    except (OSError, ValueError, SyntaxError):
        return False
    unmarked_sheet = path.name.startswith(("contact-sheet-", "contact-row-")) and "aigc" not in text
    return SHEET_KEY in text or unmarked_sheet
