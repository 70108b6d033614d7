"""Depth maps for depth ControlNets, made by a depth-estimation model the user names (`annotator=`): any transformers
`*ForDepthEstimation` model (DPT, e.g. Intel/dpt-hybrid-midas; Depth Anything) with its image processor.

Those models predict relative inverse depth (larger = nearer), which is what depth ControlNets were trained on once
normalised: each map is scaled to 0..255 on its own, white near and black far, as sd-webui-controlnet's depth
annotators write it. The model loads through the device manager like any other, so it is loaded once and shared.
"""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from ...runtime import models

PREPROCESSORS = {"depth": "a depth map (white near, black far) from the depth-estimation model named as annotator"}
FAMILY = "depth"  # the device manager's family for depth-estimation weights


def check_annotator(ref: str, where: str) -> None:
    """That `ref` names a transformers depth-estimation model, read from its config alone (nothing loads)."""
    try:
        config = models.resolve(ref).json("config.json")
    except Exception as error:  # noqa: BLE001 - a bad reference fails in many ways; say which one in one line
        raise ConfigError(f"{where}.annotator={ref!r}: {str(error).splitlines()[0]}", field="control") from None
    if config is None:
        return  # a Hub id not cached yet: from_pretrained fetches it, or says it cannot
    architectures = config.get("architectures") or []
    if not any(str(name).endswith("ForDepthEstimation") for name in architectures):
        found = ", ".join(map(str, architectures)) or config.get("_class_name") or "no known architecture"
        raise ConfigError(
            f"{where}.annotator={ref!r} is {found}, not a depth-estimation model (e.g. Intel/dpt-hybrid-midas).",
            field="control",
        )


def load(ref: str, dtype: Any) -> Any:
    """(model, image processor) on the CPU; safetensors weights only."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    source = models.resolve(ref)
    target = source.pretrained_target
    model = AutoModelForDepthEstimation.from_pretrained(target, dtype=dtype, use_safetensors=True).eval()
    return _Annotator(model, AutoImageProcessor.from_pretrained(target))


class _Annotator:
    """A depth model and its processor, as one cached value (the device manager moves the model's modules)."""

    def __init__(self, model: Any, processor: Any) -> None:
        self.model, self.processor = model, processor

    def map(self, image: Any, size: tuple[int, int]) -> Any:
        """The depth map of `image` at `size`, RGB, normalised to 0..255 (white near)."""
        import numpy as np
        import torch
        from PIL import Image

        parameter = next(self.model.parameters())
        inputs = self.processor(images=image.convert("RGB"), return_tensors="pt")
        pixels = inputs["pixel_values"].to(parameter.device, parameter.dtype)
        with torch.inference_mode():
            depth = self.model(pixel_values=pixels).predicted_depth[0].float()
        depth = torch.nn.functional.interpolate(depth[None, None], size=(size[1], size[0]), mode="bicubic")[0, 0]
        low, span = depth.min(), float(depth.max() - depth.min())  # one read of the device: the map is done
        scaled = ((depth - low) / span * 255 if span > 0 else depth * 0).round().clamp(0, 255).to(torch.uint8)
        plane = scaled.cpu().numpy()
        return Image.fromarray(np.stack([plane] * 3, axis=-1))
