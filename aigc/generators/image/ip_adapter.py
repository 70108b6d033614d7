"""IP-Adapter: an image as a prompt. The adapter's weights add image cross-attention to the UNet, fed by a CLIP
image encoder; diffusers loads both (`load_ip_adapter`). aigc takes the adapter as one reference: its .safetensors
file in a folder that holds the encoder as `image_encoder/` (h94/IP-Adapter's `models/` layout), or that folder.

Loading changes the UNet's attention processors, so a pipeline with an adapter is its own entry in the device
manager's cache (the adapter is part of the load-time variant), and the plain pipeline is never changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...runtime import models
from .pictures import open_image

ENCODER = "image_encoder"
_KEYS = ("image_proj.", "ip_adapter.")  # the two halves of an IP-Adapter state dict, as diffusers reads them


def weights_file(ref: str) -> Path:
    """The adapter's .safetensors file a reference names (the file, or the one ip-adapter*.safetensors in a folder),
    checked from its header and its folder's files alone, before anything loads."""
    path = Path(ref).expanduser()
    if path.is_dir():
        found = sorted(path.glob("*.safetensors"))
        if len(found) != 1:
            raise ConfigError(
                f"ip_adapter={ref!r} is a folder with {len(found)} .safetensors files; pass the adapter's file itself.",
                field="ip_adapter",
            )
        path = found[0]
    if not path.is_file() or path.suffix.lower() != ".safetensors":
        raise ConfigError(
            f"ip_adapter={ref!r}: not an IP-Adapter .safetensors file (e.g. ip-adapter_sd15.safetensors); aigc loads "
            "adapters from safetensors only.",
            field="ip_adapter",
        )
    names = models.resolve(str(path)).tensor_names()
    if names is None or not all(any(name.startswith(key) for name in names) for key in _KEYS):
        raise ConfigError(
            f"ip_adapter={ref!r} holds no IP-Adapter (its tensors are not named image_proj.* and ip_adapter.*).",
            field="ip_adapter",
        )
    if not (path.parent / ENCODER / "config.json").is_file():
        raise ConfigError(
            f"ip_adapter={ref!r}: its folder has no {ENCODER}/ (the CLIP image encoder the adapter reads images with); "
            f"put it beside the file, as h94/IP-Adapter's models/{ENCODER}.",
            field="ip_adapter",
        )
    return path


def check(params: dict[str, Any]) -> None:
    """image_prompt and ip_adapter come together; the images are readable; the adapter is one."""
    prompt, adapter = params.get("image_prompt"), params.get("ip_adapter")
    if (prompt is None) != (adapter is None):
        given, missing = ("image_prompt", "ip_adapter") if adapter is None else ("ip_adapter", "image_prompt")
        raise ConfigError(f"{given} needs {missing} too (the adapter reads the image prompt).", field=missing)
    if prompt is not None and adapter is not None:
        weights_file(adapter)
        images(prompt)


def images(value: Any) -> list[Any]:
    """The image prompt as RGB images (one, or several that steer together)."""
    listed = value if isinstance(value, list) else [value]
    many = isinstance(value, list)
    return [open_image(item, f"image_prompt[{index}]" if many else "image_prompt") for index, item in enumerate(listed)]


def load(pipe: Any, ref: str) -> None:
    """The adapter and its image encoder into `pipe` (a fresh copy: the cache keeps the plain one apart)."""
    path = weights_file(ref)
    pipe.load_ip_adapter(str(path.parent), subfolder="", weight_name=path.name, image_encoder_folder=ENCODER)
