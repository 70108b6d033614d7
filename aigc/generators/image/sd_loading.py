"""Loading a Stable Diffusion pipeline (a diffusers directory, a Hub id or one checkpoint file) and the speed-ups
applied to it once at load time; what a single-file checkpoint must hold, read from its header alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import ModelLoadError
from ...runtime import models

_SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
_SD_KEYS = ("model.diffusion_model.", "conditioner.", "cond_stage_model.")  # keys of an original SD checkpoint
# switches that change the cached modules: applied once at load time, and part of the cache key
MODULE_SWITCHES = ("fuse_qkv", "channels_last", "compile")


def load_pipeline(source: models.ModelSource, model: str, dtype: Any, safety_checker: bool) -> Any:
    """The pipeline a model reference names, on the CPU in `dtype`: a diffusers directory or Hub id, or a single
    checkpoint file."""
    path = source.path
    if path is not None and path.is_file():
        return _load_single_file(path, model, dtype, safety_checker)
    from diffusers import DiffusionPipeline

    # a cached Hub model loads by id, so diffusers finds every file it needs in the cache itself
    target = source.pretrained_target
    kwargs: dict[str, Any] = {}
    if not safety_checker and "safety_checker" in (source.json("model_index.json") or {"safety_checker": 1}):
        kwargs = {"safety_checker": None, "requires_safety_checker": False}  # SDXL has none, and warns if told
    try:
        pipe = DiffusionPipeline.from_pretrained(target, dtype=dtype, use_safetensors=True, **kwargs)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"model={model!r} could not be loaded from {target}: {error}") from error
    if safety_checker and getattr(pipe, "safety_checker", None) is None:
        raise ModelLoadError(
            f"safety_checker=True, but model={model!r} ships no safety checker; "
            "use safety_checker=False or another model."
        )
    return pipe


def _load_single_file(path: Path, model: str, dtype: Any, safety_checker: bool) -> Any:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    xl = "xl" in path.name.lower()
    cls = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
    kwargs = {} if xl or safety_checker else {"safety_checker": None, "requires_safety_checker": False}
    try:
        return cls.from_single_file(str(path), dtype=dtype, **kwargs)
    except Exception as error:  # noqa: BLE001 - offline config look-ups and odd checkpoints fail many ways
        raise ModelLoadError(
            f"model={model!r}: the single-file checkpoint could not be loaded ({type(error).__name__}: "
            f"{error}). diffusers needs the original model's configuration from the Hub for that, which "
            "fails offline; convert it once where the Hub is reachable "
            f"(StableDiffusion{'XL' if xl else ''}Pipeline.from_single_file(path).save_pretrained(dir)) "
            "and pass that diffusers directory instead."
        ) from error


def single_file_problem(source: models.ModelSource) -> str | None:
    """Why a single-file checkpoint cannot be a Stable Diffusion model, read from its header or zip index alone."""
    if source.suffix not in _SINGLE_FILE_SUFFIXES:
        return (
            f"a {source.suffix or 'extensionless'} file cannot be a Stable Diffusion model; pass a "
            ".safetensors/.ckpt checkpoint or a diffusers directory (with model_index.json)."
        )
    if source.suffix == ".safetensors":
        tensors = source.tensor_names()
        if tensors is None:
            return "it is not a readable .safetensors file (its header does not parse: damaged or truncated)."
        if not any(name.startswith(_SD_KEYS) for name in tensors):
            return "this .safetensors file holds no Stable Diffusion checkpoint (no 'model.diffusion_model.*' weights)."
        return None
    import zipfile

    try:  # a .ckpt saved by torch is a zip archive; its index is at the end, so this reads little
        with zipfile.ZipFile(source.file) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        return (
            f"it is not a readable .ckpt checkpoint ({error}: damaged, truncated, or an old pickle format aigc "
            "does not load); pass a .safetensors checkpoint or a diffusers directory."
        )
    return None


def tune(pipe: Any, *, fuse_qkv: bool, channels_last: bool, compile: bool) -> None:
    """The module-level speed-ups, applied once to a freshly loaded pipeline (they change its modules).

    Attention keeps diffusers' default SDPA processors (fused ones are SDPA too); nothing here swaps them for
    the slower classic AttnProcessor, as set_default_attn_processor() would. fuse_qkv keeps the unfused
    projections beside the fused ones (diffusers does not drop them): about 7% more UNet weights for SD 1.5.
    """
    import torch

    for name in ("unet", "vae"):
        module = getattr(pipe, name, None)
        if module is None:
            continue
        if fuse_qkv and hasattr(module, "fuse_qkv_projections"):
            try:
                module.fuse_qkv_projections()
            except ValueError as error:  # e.g. attention with added KV projections
                raise ModelLoadError(
                    f"fuse_qkv=True cannot fuse this model's {name} ({error}); pass fuse_qkv=False."
                ) from error
        if channels_last:
            module.to(memory_format=torch.channels_last)
    if compile:
        try:
            pipe.unet.compile_repeated_blocks(fullgraph=True)  # regional: one compile serves every repeated block
        except (AttributeError, ValueError) as error:
            unet = type(getattr(pipe, "unet", None)).__name__
            raise ModelLoadError(
                f"compile=True: this model's UNet ({unet}) has no repeated blocks to compile "
                f"({error}); pass compile=False."
            ) from error
