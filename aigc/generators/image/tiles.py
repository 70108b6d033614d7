"""Running an upscaling network tile by tile, so device memory stays bounded however big the image is.

Each tile is run with `overlap` pixels of its neighbours around it as context, and only its own centre is kept:
where the overlap covers the network's receptive field, the result is the untiled one (float rounding aside).
Finished tiles leave the device as uint8 at once, so the device holds one tile's activations, never the image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.nn import functional as F

Box = tuple[int, int, int, int]  # top, bottom, left, right


def upscale(
    net: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    scale: int,
    *,
    tile: int,
    overlap: int,
    align: int = 1,
    on_tile: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """`image` (B, 3, H, W, floats in [0, 1] on the net's device) upscaled by the net's `scale`, as uint8 on the CPU
    (B, H*scale, W*scale, 3). `tile` is the side of each tile's centre in input pixels (0: the whole image at
    once); `align` is what the net needs the sides to be multiples of (its pixel-unshuffle factor)."""
    batch, _, height, width = image.shape
    padded = _pad_to(image, align)
    tile = max(align, tile // align * align) if tile else max(padded.shape[-2:])
    overlap = -(-overlap // align) * align
    canvas = torch.empty((batch, padded.shape[-2] * scale, padded.shape[-1] * scale, 3), dtype=torch.uint8)
    boxes = list(_grid(padded.shape[-2], padded.shape[-1], tile))
    for done, (top, bottom, left, right) in enumerate(boxes, 1):
        ctop, cleft = max(0, top - overlap), max(0, left - overlap)
        cbottom, cright = min(padded.shape[-2], bottom + overlap), min(padded.shape[-1], right + overlap)
        out = net(padded[:, :, ctop:cbottom, cleft:cright])
        keep = out[
            :, :, (top - ctop) * scale : (bottom - ctop) * scale, (left - cleft) * scale : (right - cleft) * scale
        ]
        canvas[:, top * scale : bottom * scale, left * scale : right * scale] = to_uint8(keep).cpu()
        if on_tile is not None:
            on_tile(done, len(boxes))
    return canvas[:, : height * scale, : width * scale]


def count(height: int, width: int, tile: int, align: int = 1) -> int:
    """How many tiles `upscale` runs for an image of this size."""
    height, width = -(-height // align) * align, -(-width // align) * align
    tile = max(align, tile // align * align) if tile else max(height, width)
    return -(-height // tile) * -(-width // tile)


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) floats in [0, 1] -> (B, H, W, 3) uint8, rounded in float32 (bf16 cannot hold 0-255 exactly)."""
    return (pixels.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def _grid(height: int, width: int, tile: int) -> Iterator[Box]:
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            yield top, min(top + tile, height), left, min(left + tile, width)


def _pad_to(image: torch.Tensor, align: int) -> torch.Tensor:
    """The image grown at the bottom and right to multiples of `align`, repeating its edge pixels."""
    down, right = -image.shape[-2] % align, -image.shape[-1] % align
    if not down and not right:
        return image
    return F.pad(image, (0, right, 0, down), mode="replicate")
