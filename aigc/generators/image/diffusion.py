"""Image generation with Stable Diffusion through diffusers: text-to-image, image-to-image, editing (inpainting and
outpainting, edits.py), ControlNet (control.py) and hires fix (hires.py). The knobs are declared in
diffusion_knobs.py, loading in sd_loading.py.

Every image gets its own seeded torch.Generator, so an image with seed s is the same alone or in a batch.
The loaded pipeline is cached and shared, so each call builds a light pipeline view over its modules with
its own scheduler instance: schedulers keep per-run state and must not be shared between calls or threads.
SD 1.x/2.x/Turbo text-to-image and image-to-image run aigc's own denoising loop (denoise.py); edits, ControlNets,
hires fix and other pipelines (SDXL, Flux) the stock diffusers pipeline call of the task.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Sequence
from typing import Any

from ... import progress
from ...errors import ConfigError, ModelLoadError
from ...runtime import models
from ..base import Generator, Output
from . import control, depth_maps, edits, hires, ip_adapter, sd_loading, sd_upscale
from .diffusion_knobs import DEFAULT_GUIDANCE, DEFAULT_STEPS, PARAMS, SCHEDULERS, TILE_ABOVE
from .pictures import open_image, sized

CONTROLNETS = "controlnets"  # the loaded ControlNets, handed from run() to forward() beside the knobs


class DiffusionGenerator(Generator):
    """Stable Diffusion (1.x, 2.x, XL) from a Hub id, a diffusers directory or a single .safetensors/.ckpt file.

    `steps` and `guidance` default to 30 and 7.5, except for SD-Turbo style models (the model reference
    contains "turbo"), which are distilled for one step without classifier-free guidance: there they
    default to 1 step (enough steps for one denoising step at the given `strength` with an init image)
    and guidance 0. The values actually used are recorded in the Asset's params and each Output's info.

    The safety checker is off unless `safety_checker=True`: it is a user's choice, and it costs a second
    CLIP model in memory. With it on, flagged images come back black with info["nsfw"] = True.

    Speed: StableDiffusionPipeline / StableDiffusionImg2ImgPipeline models (SD 1.x, 2.x, SD-Turbo) run aigc's
    own loop (`fast_loop`, see denoise.py); any other pipeline type (SDXL, LCM-distilled UNets) keeps the stock
    diffusers pipeline call, which the module switches (`fuse_qkv`, `channels_last`, `compile`) still speed up.
    The same seed gives the stock pipeline's image within float rounding either way. info["fast"] lists
    the fast paths a call used.
    """

    kind = "image"
    family = "diffusion"
    limits = {"megapixels": 64}  # denoising holds latents and activations per image: e.g. 16 images of 2048 px
    params = PARAMS

    @classmethod
    def check_knobs(cls, knobs: dict[str, Any]) -> None:
        if edits.wanted(knobs) and knobs["init_image"] is None:
            knob = "mask" if knobs["mask"] is not None else "outpaint"
            raise ConfigError(f"{knob} edits an image; pass the image to edit as init_image=.", field=knob)
        if knobs["hires"] is not None:
            for knob in ("init_image", "control", "image_prompt"):
                if knobs[knob] is not None:
                    raise ConfigError(
                        f"hires is for text-to-image; with {knob} generate at the size you want (or upscale the "
                        "result with backend='upscale').",
                        field="hires",
                    )
        steps, strength = knobs["steps"], knobs["strength"]
        if knobs["init_image"] is not None and steps is not None and int(steps * strength) < 1:
            raise ConfigError(
                f"steps={steps} with strength={strength} leaves no denoising step (steps x strength < 1); "
                f"raise steps to {math.ceil(1 / strength)} or raise strength.",
                field="steps",
            )

    @classmethod
    def a1111(cls, params: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
        settings = super().a1111(params, info)
        if params.get("init_image") is None:
            settings.pop("Denoising strength", None)  # strength only means something for image-to-image
        if params.get("control"):
            settings.update(control.a1111(params["control"]))
        if params.get("ip_adapter"):
            settings["IP-Adapter"] = models.public_name(str(params["ip_adapter"]))
            settings["IP-Adapter weight"] = params.get("image_prompt_scale")
        if params.get("hires") is not None:  # A1111's labels for the hires pass (its strength is the pass's own)
            upscaler = params.get("hires_upscaler") or "latent"
            settings["Hires upscaler"] = hires.A1111_NAMES.get(upscaler) or models.public_name(upscaler)
            settings["Denoising strength"] = params.get("hires_strength")
        if not edits.wanted(params):
            settings.pop("Mask blur", None)
        elif params.get("inpaint_area") == "masked":  # A1111 writes these for "only masked" alone
            settings.update({"Inpaint area": "Only masked", "Masked area padding": params.get("inpaint_padding")})
        return settings

    @classmethod
    def model_fits(cls, source: models.ModelSource) -> str | None:
        path = source.path
        if path is not None and path.is_file():
            return sd_loading.single_file_problem(source)
        index = source.json("model_index.json")
        if index is not None:
            if index.get("_class_name") in sd_upscale.SCALES:
                return f"it is an upscaler ({index['_class_name']}); use backend='upscale'."
            return None
        if path is None and source.json("config.json") is None:
            return None  # a Hub id not cached yet whose files cannot be read from here: from_pretrained downloads it
        has_config = (path / "config.json").exists() if path is not None else True
        found = "a transformers model (config.json)" if has_config else "no model_index.json"
        where = path if path is not None else source.ref
        return (
            f"{where} holds {found}, so it is not a diffusers pipeline directory; pass a directory saved with "
            "pipeline.save_pretrained(dir), a Hub id like 'stable-diffusion-v1-5/stable-diffusion-v1-5', or a "
            "single .safetensors checkpoint."
        )

    @property
    def is_turbo(self) -> bool:
        return "turbo" in self.model.lower()

    def resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        """Steps and guidance when left to their defaults: 30 and 7.5, or 1 and 0 for Turbo models (image-to-image
        runs int(steps x strength) steps, so a Turbo model then needs enough for one of them)."""
        steps, guidance = params["steps"], params["guidance"]
        if steps is None:
            img2img = params["init_image"] is not None
            steps = (math.ceil(1 / params["strength"]) if img2img else 1) if self.is_turbo else DEFAULT_STEPS
        if guidance is None:
            guidance = 0.0 if self.is_turbo else DEFAULT_GUIDANCE
        return {**params, "steps": steps, "guidance": guidance}

    def check(self, prompts: Sequence[str], seeds: Sequence[int], params: dict[str, Any]) -> None:
        size = (params["width"] or 512, params["height"] or 512)  # 512: SD 1.x's native size
        task = _task(params)
        if task == "inpainting":
            size = _edit(params).size
        elif task == "image-to-image":
            size = sized(open_image(params["init_image"]), params["width"], params["height"]).size
        elif params["control"] and not (params["width"] and params["height"]):
            size = control.size_of(params["control"])
        elif params["hires"] is not None:
            size = hires.target_size(*size, params["hires"])
            if params["hires_upscaler"] not in hires.UPSCALERS:
                self._upscaler(params["hires_upscaler"])  # a file the upscale backend cannot run fails here
            steps = params["hires_steps"] or params["steps"]
            if int(steps * params["hires_strength"]) < 1:
                raise ConfigError(
                    f"hires_steps={steps} with hires_strength={params['hires_strength']} leaves no denoising step; "
                    "raise hires_steps or hires_strength.",
                    field="hires_steps",
                )
        self._check_task_exists(task)
        ip_adapter.check(params)
        if params["control"]:
            self._check_controls(params["control"])
        self.check_pixels(len(prompts), *size)
        if params["compile"]:
            from ...runtime.devices import require_compiler

            require_compiler(self.manager.device)

    def _check_task_exists(self, task: str) -> None:
        """That diffusers has a pipeline for this task and model class, and that an inpainting model (a UNet that
        reads a mask) is asked to inpaint: both read from the model's small config files."""
        directory = self.source.path is None or self.source.path.is_dir()
        unet = self.source.json("unet/config.json") if directory else None
        if unet and unet.get("in_channels") == 9 and task != "inpainting":
            raise ConfigError(
                f"model={self.model!r} is an inpainting model (its UNet reads a mask); pass init_image= and mask= "
                "(or outpaint=), or use an ordinary checkpoint for text-to-image and image-to-image.",
                field="mask",
            )
        index = self.source.json("model_index.json") if directory else None
        if not index or task == "text-to-image":
            return
        from diffusers.pipelines import auto_pipeline as auto

        mapping = (
            auto.AUTO_INPAINT_PIPELINES_MAPPING if task == "inpainting" else auto.AUTO_IMAGE2IMAGE_PIPELINES_MAPPING
        )
        try:
            auto._get_task_class(mapping, index.get("_class_name", ""))
        except ValueError as error:
            raise ConfigError(
                f"this model ({index.get('_class_name')}) has no {task} pipeline in diffusers: {error}",
                field="mask" if task == "inpainting" else "init_image",
            ) from None

    def _check_controls(self, entries: list[dict[str, Any]]) -> None:
        directory = self.source.path is None or self.source.path.is_dir()
        index = self.source.json("model_index.json") if directory else None
        unet = self.source.json("unet/config.json") if directory else None
        control.check_models(entries, control.base_of_pipeline(index, unet) if index or unet else None, self.model)

    def run(self, prompts: Sequence[str], seeds: Sequence[int], params: dict[str, Any]) -> list[Output]:
        """The shared frame, with each ControlNet held in the device manager's cache (pinned) while it runs."""
        with contextlib.ExitStack() as pins:
            nets = [
                pins.enter_context(
                    self.manager.use(self._control_key(entry), functools.partial(self._load_control, entry))
                )
                for entry in params["control"] or []
            ]
            return super().run(prompts, seeds, {**params, CONTROLNETS: nets})

    def _control_key(self, entry: dict[str, Any]) -> Any:
        return self.manager.key(control.FAMILY, entry["model"], self.dtype, {})

    def _load_control(self, entry: dict[str, Any]) -> Any:
        try:
            return control.load(entry["model"], self.dtype)
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"control model={entry['model']!r} could not be loaded: {error}") from error

    def _depth_map(self, ref: str, image: Any, size: tuple[int, int]) -> Any:
        """A depth control map from the depth-estimation model `ref`, held in the device manager's cache."""
        key = self.manager.key(depth_maps.FAMILY, ref, self.dtype, {})
        with self.manager.use(key, functools.partial(depth_maps.load, ref, self.dtype)) as annotator:
            return annotator.map(image, size)

    def variant(self, params: dict[str, Any]) -> dict[str, Any]:
        """The load-time switches that differ from the defaults: such a copy is another cached model (the default
        copy keeps the plain key, so `manager.key(family, model)` finds it)."""
        switches = {"safety_checker": bool(params["safety_checker"]), **self.module_switches(params)}
        defaults = {"safety_checker": False, **self.module_switches({})}
        changed: dict[str, Any] = {name: value for name, value in switches.items() if value != defaults[name]}
        if params.get("ip_adapter") is not None:  # it changes the UNet's attention: its own copy
            changed["ip_adapter"] = str(ip_adapter.weights_file(params["ip_adapter"]))
        return changed

    def module_switches(self, params: dict[str, Any]) -> dict[str, bool]:
        """fuse_qkv, channels_last and compile as they will be applied on this manager's device."""
        switches = {name: params.get(name, self.params[name].default) for name in sd_loading.MODULE_SWITCHES}
        if switches["channels_last"] is None:
            switches["channels_last"] = self.manager.device.type == "cuda"
        return {name: bool(value) for name, value in switches.items()}

    def load(self, **variant: Any) -> Any:
        """The pipeline on the CPU, in the manager's dtype, with the module switches applied; the manager moves
        its components to the device (Module.to keeps the channels-last layout)."""
        switches = {**self.module_switches({}), **{k: v for k, v in variant.items() if k in sd_loading.MODULE_SWITCHES}}
        pipe = sd_loading.load_pipeline(self.source, self.model, self.dtype, bool(variant.get("safety_checker", False)))
        sd_loading.tune(pipe, **switches)
        if variant.get("ip_adapter"):
            ip_adapter.load(pipe, variant["ip_adapter"])
        return pipe

    def preprocess(self, pipe: Any, prompts: list[str], seeds: list[int], params: dict[str, Any]) -> list[Any]:
        """(prompt, seed, init image or edit, control maps) per image; the images are read once for all of them."""
        init = params["init_image"]
        if edits.wanted(params):
            init = _edit(params)
        elif init is not None:
            init = sized(open_image(init), params["width"], params["height"])
        maps = None
        if params["control"]:
            size = init.size if init is not None else (params["width"], params["height"])
            size = size if all(size) else control.size_of(params["control"])
            maps = control.maps(params["control"], size, self._depth_map)
        return [(prompt, seed, init, maps) for prompt, seed in zip(prompts, seeds, strict=True)]

    def forward(self, pipe: Any, items: Sequence[Any], params: dict[str, Any]) -> list[Output]:
        import torch

        from . import denoise

        init, maps = items[0][2], items[0][3]
        edit = init if isinstance(init, edits.Edit) else None
        nets = params.get(CONTROLNETS, [])
        view = _view(pipe, params["scheduler"], _task(params), nets)
        device = self.manager.device
        prompts = [item[0] for item in items]
        generators = [torch.Generator(device=device).manual_seed(item[1]) for item in items]
        prompted = params["image_prompt"] is not None
        own = params["fast_loop"] and edit is None and not nets and not prompted and denoise.supports(view)
        tiled = False
        with torch.inference_mode():
            if params["hires"] is not None:
                own = False
                images, flags = self._hires(pipe, view, prompts, generators, params)
            elif own:
                images, flags, tiled = self._own_loop(view, prompts, generators, params, init)
            else:
                extra = control.pipeline_kwargs(view, params["control"], maps) if nets else {}
                if prompted:  # one adapter: its images together (a list steers with all of them)
                    view.set_ip_adapter_scale(params["image_prompt_scale"])
                    extra["ip_adapter_image"] = [ip_adapter.images(params["image_prompt"])]
                if maps and init is None:  # the maps were made at the size to generate
                    params = {**params, "width": maps[0].width, "height": maps[0].height}
                images, flags = _stock(view, prompts, generators, params, init, extra)
        if edit is not None:
            images = [edits.finish(edit, image) for image in images]
        guided = params["guidance"] > 1
        fast = _fast_paths(view, self.module_switches(params), own=own, guided=guided, tiled=tiled)
        outputs = []
        for row, image in enumerate(images):
            info: dict[str, Any] = {
                "width": image.width,
                "height": image.height,
                "steps": params["steps"],
                "guidance": params["guidance"],
                "scheduler": type(view.scheduler).__name__,
            }
            if init is not None:
                info["strength"] = params["strength"]
            if flags is not None:
                info["nsfw"] = bool(flags[row])
            info["fast"] = fast
            outputs.append(Output(image, info))
        return outputs

    def _hires(
        self, pipe: Any, view: Any, prompts: list[str], generators: list[Any], params: dict[str, Any]
    ) -> tuple[list[Any], list[bool] | None]:
        """Hires fix (hires.py): the first pass at the base size, upscaled, repainted by image-to-image."""
        upscaler, factor = params["hires_upscaler"], view.vae_scale_factor
        first, _ = _stock(
            view, prompts, generators, params, None, {"output_type": "pil" if upscaler != "latent" else "latent"}
        )
        size = hires.target_size(*hires.base_size(first, factor), params["hires"])
        model = None if upscaler in hires.UPSCALERS else functools.partial(self._upscale, upscaler)
        start = hires.upscaled(first, size, upscaler, factor, model)
        second = _view(pipe, params["scheduler"], "image-to-image", [])
        knobs = {**params, "steps": params["hires_steps"] or params["steps"], "strength": params["hires_strength"]}
        return _stock(second, prompts, generators, knobs, start, {})

    def _upscaler(self, model: str) -> Any:
        """The upscale backend for `hires_upscaler=` a model: its checks run now; its weights share this manager."""
        from .upscale import UpscaleGenerator

        try:
            return UpscaleGenerator(model, self.manager)
        except ModelLoadError as error:
            words = ", ".join(repr(word) for word in hires.UPSCALERS)
            raise ModelLoadError(f"hires_upscaler (not {words}, so an upscaler model): {error}") from None

    def _upscale(self, model: str, image: Any, scale: float) -> Any:
        upscaler = self._upscaler(model)
        knobs = upscaler.check_params({"init_image": image, "scale": scale})
        return upscaler.generate([""], [0], **knobs)[0].data

    def _own_loop(
        self, view: Any, prompts: list[str], generators: list[Any], params: dict[str, Any], init: Any
    ) -> tuple[list[Any], list[bool] | None, bool]:
        """aigc's loop (denoise.py): the images, the safety checker's flags and whether the VAE ran in tiles."""
        from . import denoise

        size = init.size if init is not None else denoise.image_size(view, params["width"], params["height"])
        tiled = params["vae_tiling"] if params["vae_tiling"] is not None else max(size) > TILE_ABOVE
        on_step = (lambda step, total: self.report("denoise", step, total)) if self.reporting else None
        images, flags = denoise.generate(
            view,
            prompts,
            generators,
            steps=params["steps"],
            guidance=params["guidance"],
            negative_prompt=params["negative_prompt"],
            width=params["width"],
            height=params["height"],
            init=init,
            strength=params["strength"],
            tiled=tiled,
            on_step=on_step,
        )
        return images, flags, tiled


def _task(params: dict[str, Any]) -> str:
    """Which diffusers task these knobs ask for: text-to-image, image-to-image or inpainting (a mask or outpaint)."""
    if edits.wanted(params):
        return "inpainting"
    return "image-to-image" if params["init_image"] is not None else "text-to-image"


def _edit(params: dict[str, Any]) -> edits.Edit:
    """The edit the knobs describe (read and checked from the files; nothing loads)."""
    return edits.plan(
        params["init_image"],
        params["mask"],
        width=params["width"],
        height=params["height"],
        outpaint=params["outpaint"],
        blur=params["mask_blur"],
        area=params["inpaint_area"],
        padding=params["inpaint_padding"],
    )


def _stock(
    pipe: Any, prompts: list[str], generators: list[Any], params: dict[str, Any], init: Any, extra: dict[str, Any]
) -> tuple[list[Any], list[bool] | None]:
    """The stock diffusers pipeline call: SDXL, edits, ControlNets (in `extra`), and any pipeline aigc's loop does
    not reproduce."""
    kwargs: dict[str, Any] = {
        "prompt": prompts,
        "num_inference_steps": params["steps"],
        "guidance_scale": params["guidance"],
        "generator": generators,
        "num_images_per_prompt": 1,
        "output_type": "pil",
    }
    if params["negative_prompt"] is not None:
        kwargs["negative_prompt"] = [params["negative_prompt"]] * len(prompts)
    if isinstance(init, edits.Edit):  # the pipeline repaints the canvas under the mask; edits.finish composites
        width, height = init.size
        kwargs.update(image=[init.canvas] * len(prompts), mask_image=[init.mask] * len(prompts), width=width)
        kwargs.update(height=height, strength=params["strength"])
    elif init is None:
        kwargs.update(width=params["width"], height=params["height"])
    else:  # one init image for all, or (hires fix) each image's own: images or latents
        own = isinstance(init, list) or hasattr(init, "shape")
        kwargs.update(image=init if own else [init] * len(prompts), strength=params["strength"])
    kwargs.update(extra)
    if progress.active():

        def on_step_end(_pipe: Any, step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            progress.report("denoise", step + 1, getattr(_pipe, "num_timesteps", params["steps"]))
            return tensors

        kwargs["callback_on_step_end"] = on_step_end
    result = pipe(**kwargs)
    return result.images, getattr(result, "nsfw_content_detected", None)


def _fast_paths(pipe: Any, switches: dict[str, bool], *, own: bool, guided: bool, tiled: bool) -> list[str]:
    """The names of the fast paths a call used, for its info."""
    from diffusers.models.attention_processor import AttnProcessor2_0, FusedAttnProcessor2_0

    unet = getattr(pipe, "unet", None)
    processors = list(unet.attn_processors.values()) if unet is not None else []
    sdpa = bool(processors) and all(isinstance(p, (AttnProcessor2_0, FusedAttnProcessor2_0)) for p in processors)
    used = {
        "aigc-loop": own,
        "prompt-reuse": own,
        "batched-cfg": guided,
        "fused-qkv": switches["fuse_qkv"],
        "channels-last": switches["channels_last"],
        "sdpa": sdpa,
        "compiled": switches["compile"],
        "vae-tiling": tiled,
    }
    return [name for name, on in used.items() if on]


def _view(pipe: Any, scheduler: str | None, task: str, controlnets: list[Any]) -> Any:
    """A new pipeline over the cached pipeline's modules (no weights copied) for `task`, with a fresh scheduler and
    the ControlNets (diffusers picks the ControlNet pipeline of the task)."""
    import diffusers

    scheduler_cls = getattr(diffusers, SCHEDULERS[scheduler]) if scheduler else type(pipe.scheduler)
    fresh = scheduler_cls.from_config(pipe.scheduler.config)
    auto = {
        "text-to-image": diffusers.AutoPipelineForText2Image,
        "image-to-image": diffusers.AutoPipelineForImage2Image,
        "inpainting": diffusers.AutoPipelineForInpainting,
    }[task]
    nets = {"controlnet": controlnets[0] if len(controlnets) == 1 else controlnets} if controlnets else {}
    try:
        view = auto.from_pipe(pipe, scheduler=fresh, **nets)
    except ValueError as error:
        raise ConfigError(f"this model ({type(pipe).__name__}) has no {task} pipeline in diffusers: {error}") from error
    view.set_progress_bar_config(disable=True)  # its steps are reported to aigc's own progress (progress.py)
    return view
