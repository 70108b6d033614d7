"""DCGAN-style image generators: the face pack (embedded default) or any compatible generator state dict.

A DCGAN is unconditional: the prompt is recorded but does not steer it (Asset.info says so), unless
`refine=k` climbs the scorer's relevance on the latent. A seed picks one latent vector, so a seed always
gives the same face, alone or in a batch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from ...errors import ConfigError
from ...records import Refinement
from ...runtime import models
from ...seeds import MAX_SEED
from ..base import Generator, Nudge, Output, Param

FILTERS = ("nearest", "bilinear", "bicubic", "lanczos")
WEIGHT_FILES = (".pt", ".pth", ".tar", ".bin", ".safetensors")
_CONV_KEY = re.compile(r"^(main\.)?\d+\.weight$")


class GANGenerator(Generator):
    kind = "image"
    family = "dcgan"
    params = {
        "truncation": Param(
            1.0,
            "scale the latent toward the mean: lower = more typical, less varied",
            "float",
            0.0,
            1.0,
            min_exclusive=True,
            nudge=Nudge(novelty=0.1, relevance=-0.1, quality=-0.1, low=0.3, high=1.0),
        ),
        "size": Param(None, "output side in pixels (upscaled from the native size)", "int", 8, 4096),
        "upscale_filter": Param("lanczos", "PIL filter used when size is set", "str", choices=FILTERS),
        "frames": Param(
            None, "make a strip of this many frames, walking the latent from seed to to_seed", "int", 2, 64
        ),
        "to_seed": Param(None, "where the frames end (default: seed + 1)", "int", 0, MAX_SEED),
        "refine": Param(
            0, "steps of gradient ascent on the latent toward the prompt (needs the scorer)", "int", 0, 500
        ),
        "refine_rate": Param(0.05, "step size of the latent refinement", "float", 0.0, 1.0, min_exclusive=True),
        "prior_weight": Param(1.0, "how strongly refinement keeps latents typical, so faces stay faces", "float", 0.0),
        "prior": Param(
            None,
            "a latent prior file from `aigc tune image --backend gan` (.safetensors or .json): "
            "latents are drawn from it, toward what the team liked; the same seed and prior give "
            "the same image",
            "path",
        ),
        "objective": Param(
            None,
            "differentiable score of images in [-1, 1] per prompt (aigc.generate passes the scorer's)",
            "callable",
            record=False,
        ),
        "batch_size": Param(256, "latents decoded together; halves itself on out-of-memory", "int", 1, record=False),
    }

    @classmethod
    def model_fits(cls, source: models.ModelSource) -> str | None:
        if source.path is None or source.path.is_dir():
            return "a GAN is one weights file (.pt/.pth/.tar/.safetensors) or pack:gan-faces."
        if source.suffix not in WEIGHT_FILES:
            return f"a {source.suffix or 'extensionless'} file is not a GAN state dict ({', '.join(WEIGHT_FILES)})."
        tensors = source.tensor_names()
        if source.suffix == ".safetensors" and not any(
            _CONV_KEY.match(k) and len(s) == 4 for k, s in (tensors or {}).items()
        ):
            return "this .safetensors file holds no DCGAN generator (transposed-convolution weights 'main.N.weight')."
        return _upscaler_in(source.file)

    @classmethod
    def check_knobs(cls, knobs: dict[str, Any]) -> None:
        if knobs["refine"] and knobs["frames"]:
            raise ConfigError("refine= and frames= do not combine; refine single images.", field="refine")
        if knobs["to_seed"] is not None and not knobs["frames"]:
            raise ConfigError(
                "to_seed= is where a strip of frames ends; pass frames= too (or drop to_seed=).", field="to_seed"
            )

    def needs_objective(self, params: dict[str, Any]) -> bool:
        """Refinement climbs an objective; aigc.generate hands in the scorer's when none was given."""
        return bool(params["refine"]) and params["objective"] is None

    def check(self, prompts: Sequence[str], seeds: Sequence[int], params: dict[str, Any]) -> None:
        if params["prior"] is not None:
            from ...media.latent_prior import read_prior

            read_prior(params["prior"])  # a missing or damaged file fails here, before the GAN loads
        side = params["size"] or 64  # the face pack's native size; a larger native GAN is caught once loaded
        self.check_pixels(len(prompts) * (params["frames"] or 1), side, side)
        if self.needs_objective(params):
            raise ConfigError(
                "refine= needs an objective: call it through aigc.generate, which passes the scorer's.",
                field="objective",
            )

    def load(self) -> Any:
        from .dcgan import build_dcgan, read_state_dict

        return build_dcgan(read_state_dict(self.source.file), where=str(self.source.file))

    def preprocess(self, gan: Any, prompts: list[str], seeds: list[int], params: dict[str, Any]) -> list[Any]:
        """Each output's latents: one, or the slerp walk of a strip; drawn on the CPU from the seed."""
        from .dcgan import slerp

        draw = self._drawer(gan.nz, params)
        items = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            start = draw(seed)
            group = [start]
            if params["frames"]:
                end = draw(self._to_seed(seed, params))
                group = [slerp(start, end, t / (params["frames"] - 1)) for t in range(params["frames"])]
            items.append((prompt, seed, group))
        return items

    @staticmethod
    def _drawer(nz: int, params: dict[str, Any]) -> Callable[[int], Any]:
        """seed -> latent: the seed's standard-normal draw, moved into the prior if one is given, then truncated."""
        from .dcgan import latent

        if params["prior"] is None:
            return lambda seed: latent(nz, seed) * params["truncation"]
        from ...media.latent_prior import read_prior

        prior = read_prior(params["prior"])
        if prior.nz != nz:
            raise ConfigError(
                f"prior={params['prior']!r} is for a {prior.nz}-d latent, but this GAN's is {nz}-d; use "
                "a prior fitted for this model.",
                field="prior",
            )
        return lambda seed: prior.apply(latent(nz, seed)) * params["truncation"]

    def forward(self, gan: Any, items: Sequence[Any], params: dict[str, Any]) -> list[Output]:
        groups = [group for _, _, group in items]
        refinements: list[Refinement | None] = [None] * len(items)
        if params["refine"]:
            groups, refinements = self._refine(gan, groups, [prompt for prompt, _, _ in items], params)
        images = self._decode(gan, [z for group in groups for z in group])
        outputs, start = [], 0
        for (_, seed, group), refinement in zip(items, refinements, strict=True):
            frames = [self._resize(image, params) for image in images[start : start + len(group)]]
            start += len(group)
            info: dict[str, Any] = {
                "conditioned_on_prompt": refinement is not None,
                "width": frames[0].width,
                "height": frames[0].height,
            }
            if params["frames"]:
                info |= {"frames": len(frames), "to_seed": self._to_seed(seed, params)}
            outputs.append(Output(_strip(frames), info, refinement))
        return outputs

    def _refine(
        self, gan: Any, groups: list[list[Any]], prompts: list[str], params: dict[str, Any]
    ) -> tuple[list[list[Any]], list[Refinement | None]]:
        import torch

        from .dcgan import refine

        objective: Callable = params["objective"]
        z = torch.stack([group[0] for group in groups]).to(self.manager.device, torch.float32)
        z, before, after = refine(
            gan, z, objective, prompts, params["refine"], params["refine_rate"], params["prior_weight"]
        )
        records = [
            Refinement(params["refine"], round(float(b), 4), round(float(a), 4))
            for b, a in zip(before, after, strict=True)
        ]
        return [[row.cpu()] for row in z], list(records)

    def _decode(self, gan: Any, latents: Sequence[Any]) -> list[Any]:
        import torch
        from PIL import Image

        with torch.inference_mode():
            z = torch.stack(list(latents)).to(self.manager.device, self.dtype)
            pixels = ((gan(z).float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
        return [Image.fromarray(p) for p in pixels.numpy()]  # one device->host copy for the whole batch

    @staticmethod
    def _to_seed(seed: int, params: dict[str, Any]) -> int:
        return params["to_seed"] if params["to_seed"] is not None else seed + 1

    @staticmethod
    def _resize(image: Any, params: dict[str, Any]) -> Any:
        from PIL import Image

        if not params["size"]:
            return image
        return image.resize((params["size"],) * 2, getattr(Image.Resampling, params["upscale_filter"].upper()))


def _upscaler_in(path: Any) -> str | None:
    """Why a torch file is not a GAN when it holds an ESRGAN-family upscaler (so a model= naming one without a
    backend= picks the upscale backend); read from its index with the weights memory-mapped, never decoded."""
    from .esrgan import TORCH_FILES, LayoutError, detect, read_shapes

    if path.suffix.lower() not in TORCH_FILES:
        return None
    try:
        layout = detect(read_shapes(path))
    except LayoutError:
        return None  # not an upscaler: loading it as a GAN says what is wrong, if anything
    return f"it holds an image upscaler ({layout.name} x{layout.scale}), not a DCGAN; use backend='upscale'."


def _strip(frames: list) -> Any:
    """One image, or frames side by side."""
    from PIL import Image

    if len(frames) == 1:
        return frames[0]
    strip = Image.new("RGB", (frames[0].width * len(frames), frames[0].height))
    for i, frame in enumerate(frames):
        strip.paste(frame, (i * frame.width, 0))
    return strip
