"""ControlNet for the diffusion backend: which base each ControlNet was made for, loading one, its control maps.

The `control` knob's entries are checked by generators/controls.py; here they meet the model. A ControlNet made for
another base (SD 1.x vs SD 2.x vs SDXL vs Flux vs SD3) is refused before anything loads, from both models'
config files. Each ControlNet is its own entry in the device manager's cache, so two requests with one base and
different ControlNets share the base's weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...errors import ConfigError, ModelLoadError
from ...runtime import models
from . import control_maps, depth_maps
from .pictures import open_image, sized

FAMILY = "controlnet"  # the device manager's family for ControlNet weights
CLASSES = ("ControlNetModel", "FluxControlNetModel", "SD3ControlNetModel")  # what aigc loads as a ControlNet
_WIDTHS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}  # a UNet's cross-attention width names its base


def base_of_controlnet(config: dict[str, Any]) -> str:
    """The base model family a ControlNet's config.json says it was made for."""
    name = config.get("_class_name")
    if name == "FluxControlNetModel":
        return "Flux"
    if name == "SD3ControlNetModel":
        return "SD3"
    if config.get("addition_embed_type") == "text_time":
        return "SDXL"
    return _by_width(config.get("cross_attention_dim"))


def base_of_pipeline(index: dict[str, Any] | None, unet: dict[str, Any] | None) -> str | None:
    """The base model family of a diffusers pipeline, from its model_index.json and unet/config.json."""
    name = str((index or {}).get("_class_name", ""))
    for marker, family in (("Flux", "Flux"), ("StableDiffusion3", "SD3"), ("XL", "SDXL")):
        if marker in name:
            return family
    return _by_width(unet.get("cross_attention_dim")) if unet else None


def _by_width(width: Any) -> str:
    return _WIDTHS.get(width, f"an SD-style UNet of cross-attention width {width}") if width else "an unknown base"


def check_models(entries: list[dict[str, Any]], base: str | None, model: str) -> None:
    """Each entry's ControlNet exists, is a ControlNet aigc loads, and was made for this model's base."""
    for index, entry in enumerate(entries):
        if entry.get("annotator"):
            depth_maps.check_annotator(entry["annotator"], f"control[{index}]")
        where = f"control[{index}].model={entry['model']!r}"
        config = _config(entry["model"], where)
        if config is None:
            continue  # a Hub id not cached yet: from_pretrained fetches it (or says it cannot)
        made_for = base_of_controlnet(config)
        if base is not None and made_for != base:
            raise ConfigError(
                f"{where} is a ControlNet for {made_for}, but model={model!r} is {base}; pick a ControlNet made "
                f"for {base}.",
                field="control",
            )


def _config(ref: str, where: str) -> dict[str, Any] | None:
    try:
        source = models.resolve(ref)
    except ModelLoadError as error:
        raise ConfigError(f"{where}: {error}", field="control") from None
    config = source.json("config.json")
    if config is None and source.path is not None:
        raise ConfigError(
            f"{where} holds no config.json: pass a ControlNet saved with save_pretrained.", field="control"
        )
    if config is not None and config.get("_class_name") not in CLASSES:
        named = config.get("_class_name") or next(iter(config.get("architectures") or []), None)
        raise ConfigError(
            f"{where} is a {named or 'model of no known class'}, not a ControlNet ({', '.join(CLASSES)}).",
            field="control",
        )
    return config


def load(ref: str, dtype: Any) -> Any:
    """The ControlNet on the CPU in `dtype` (safetensors only), its class read from its config."""
    import diffusers

    source = models.resolve(ref)
    config = source.json("config.json") or {}
    name = config.get("_class_name")
    cls = getattr(diffusers, name if isinstance(name, str) and name in CLASSES else CLASSES[0])
    target = source.pretrained_target
    return cls.from_pretrained(target, dtype=dtype, use_safetensors=True)


def size_of(entries: list[dict[str, Any]]) -> tuple[int, int]:
    """The generation size the first control image sets when nothing else does (rounded down to multiples of 8)."""
    return sized(open_image(entries[0]["image"], "control[0].image"), None, None, "control[0].image").size


def maps(entries: list[dict[str, Any]], size: tuple[int, int], annotate: Callable[..., Any]) -> list[Any]:
    """Each entry's control map at the generation size, made by its preprocessor; `annotate(ref, image, size)` runs
    a model-backed one (depth) through the device manager."""
    made = []
    for index, entry in enumerate(entries):
        image = open_image(entry["image"], f"control[{index}].image")
        if entry["preprocess"] in depth_maps.PREPROCESSORS:
            made.append(annotate(entry["annotator"], image, size))
        else:
            made.append(control_maps.make(entry["preprocess"], image, size=size, **entry["options"]))
    return made


def pipeline_kwargs(pipe: Any, entries: list[dict[str, Any]], images: list[Any]) -> dict[str, Any]:
    """The ControlNet arguments of `pipe`'s call: its control images (`image` in the text-to-image pipelines of SD
    and SDXL, `control_image` elsewhere), scales and guidance windows; one value for one ControlNet, else lists."""
    import inspect

    one = len(entries) == 1
    scale = [entry["scale"] for entry in entries]
    key = "control_image" if "control_image" in inspect.signature(pipe.__call__).parameters else "image"
    return {
        key: images[0] if one else images,
        "controlnet_conditioning_scale": scale[0] if one else scale,
        "control_guidance_start": [entry["start"] for entry in entries],
        "control_guidance_end": [entry["end"] for entry in entries],
    }


def a1111(entries: list[dict[str, Any]]) -> dict[str, str]:
    """sd-webui-controlnet's "ControlNet N" settings, so A1111-reading tools see the controls."""
    return {
        f"ControlNet {index}": (
            f'"Module: {entry["preprocess"]}, Model: {models.public_name(entry["model"])}, Weight: {entry["scale"]:g}, '
            f'Guidance Start: {entry["start"]:g}, Guidance End: {entry["end"]:g}"'
        )
        for index, entry in enumerate(entries)
    }
