"""DCGAN-style image generators: the face pack (embedded default) or any compatible generator state dict.

A DCGAN is unconditional: the prompt is recorded but does not steer it (Asset.info says so). A seed
picks one latent vector, so a seed always gives the same face, alone or in a batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .. import models
from ..errors import ModelLoadError
from .base import Generator, Output, Param

FILTERS = ("nearest", "bilinear", "bicubic", "lanczos")
_NESTED_KEYS = ("netG_state_dict", "generator", "state_dict", "model")


class DCGAN(nn.Module):
    """The DCGAN generator of the PyTorch tutorial: a latent of size nz, upsampled 4 -> 8 -> ... -> size."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(channels, channels[1:])):
            first, last = i == 0, i == len(channels) - 2
            layers.append(nn.ConvTranspose2d(cin, cout, 4, 1 if first else 2, 0 if first else 1, bias=False))
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(cout), nn.ReLU(True)]
        self.main = nn.Sequential(*layers)
        self.nz = channels[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A generator state dict from .safetensors or a torch file (weights only: never arbitrary pickles)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelLoadError(f"cannot read GAN weights from {path}: {error}") from error
    for key in _NESTED_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path} does not hold a generator state dict (tensors by name).")
    return {k if k.startswith("main.") else f"main.{k}": v for k, v in state.items()}


def build_dcgan(state: dict[str, torch.Tensor], where: str) -> DCGAN:
    """Infer nz, widths and output size from the transposed-convolution weights, then load strictly."""
    convs = sorted((int(k.split(".")[1]), v.shape) for k, v in state.items() if k.endswith(".weight") and v.dim() == 4)
    if len(convs) < 2:
        raise ModelLoadError(f"{where}: no DCGAN generator here (need transposed-convolution weights 'main.N.weight').")
    channels = [convs[0][1][0]] + [shape[1] for _, shape in convs]
    model = DCGAN(channels)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        summary = str(error).splitlines()[0]
        raise ModelLoadError(
            f"{where} is not a compatible DCGAN generator (nz={channels[0]}, widths={channels[1:]}): {summary}. "
            "Expected ConvTranspose2d(4x4) + BatchNorm2d + ReLU blocks ending in Tanh, as in the PyTorch DCGAN tutorial."
        ) from None
    return model.eval()


class GANGenerator(Generator):
    kind = "image"
    family = "dcgan"
    params = {
        "truncation": Param(1.0, "scale the latent toward the mean: lower = more typical, less varied", "float",
                            0.0, 1.0, min_exclusive=True),
        "size": Param(None, "output side in pixels (upscaled from the native size)", "int", 8, 4096),
        "upscale_filter": Param("lanczos", "PIL filter used when size is set", "str", choices=FILTERS),
        "frames": Param(None, "make a strip of this many frames, walking the latent from seed to to_seed", "int", 2, 64),
        "to_seed": Param(None, "where the frames end (default: seed + 1)", "int", 0),
        "refine": Param(0, "steps of gradient ascent on the latent toward the prompt (needs the scorer)", "int", 0, 500),
        "refine_rate": Param(0.05, "step size of the latent refinement", "float", 0.0, 1.0, min_exclusive=True),
        "prior_weight": Param(1.0, "how strongly refinement keeps latents typical, so faces stay faces", "float", 0.0),
        "objective": Param(None, "differentiable score of images in [-1, 1] per prompt (aigc.generate passes the "
                           "scorer's)", "callable", record=False),
        "batch_size": Param(256, "latents decoded together; halves itself on out-of-memory", "int", 1, record=False),
    }

    def check_model(self) -> None:
        source = models.resolve(self.model)
        if source.path is None or source.path.is_dir():
            raise ModelLoadError(f"model={self.model!r}: a GAN is one weights file (.pt/.pth/.tar/.safetensors) "
                                 "or pack:gan-faces.")
        self.path = source.path

    def load(self) -> DCGAN:
        return build_dcgan(read_state_dict(self.path), where=str(self.path))

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], **params: Any) -> list[Output]:
        with self.manager.use(self.cache_key, self.load) as gan:
            latents = [self._latents(gan.nz, seed, params) for seed in seeds]
            refinements: list[dict[str, Any]] = [{} for _ in seeds]
            if params["refine"]:
                latents, refinements = self._refine(gan, latents, prompts, params)
            flat = [z for group in latents for z in group]
            images = self.manager.run_batched(lambda chunk: self._decode(gan, chunk), flat, params["batch_size"])
        outputs, start = [], 0
        for seed, group, refinement in zip(seeds, latents, refinements):
            frames = [self._resize(im, params) for im in images[start:start + len(group)]]
            start += len(group)
            info = {"conditioned_on_prompt": False, "width": frames[0].width, "height": frames[0].height}
            if params["frames"]:
                info |= {"frames": len(frames), "to_seed": params["to_seed"] if params["to_seed"] is not None else seed + 1}
            if refinement:
                info["refinement"] = refinement
                info["conditioned_on_prompt"] = True  # steered toward it through the scorer's objective
            outputs.append(Output(_strip(frames), info))
        return outputs

    def _refine(self, gan: DCGAN, latents: list[list[torch.Tensor]], prompts: Sequence[str],
                params: dict[str, Any]) -> tuple[list[list[torch.Tensor]], list[dict[str, Any]]]:
        """Gradient ascent on each latent: objective(image) minus a penalty for leaving the prior's typical shell.

        A standard normal latent of size nz has squared norm close to nz; keeping |z|^2 / nz near 1 keeps
        the generator on inputs it was trained on, so a face stays a face while it moves toward the prompt.
        """
        if params["objective"] is None:
            from ..errors import ConfigError

            raise ConfigError("refine= needs an objective: call it through aigc.generate, which passes the scorer's.")
        if params["frames"]:
            from ..errors import ConfigError

            raise ConfigError("refine= and frames= do not combine; refine single images.")
        objective, steps = params["objective"], params["refine"]
        z = torch.stack([group[0] for group in latents]).to(self.manager.device, torch.float32).requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=params["refine_rate"])
        frozen = [p.requires_grad_(False) for p in gan.parameters()]
        before = None
        for _ in range(steps):
            optimizer.zero_grad()
            score = objective(gan(z.to(self.dtype)).float(), list(prompts))
            before = score.detach().cpu() if before is None else before
            drift = (z.pow(2).flatten(1).mean(dim=1) - 1).pow(2)
            (-(score - params["prior_weight"] * drift)).sum().backward()
            optimizer.step()
        with torch.no_grad():
            after = objective(gan(z.to(self.dtype)).float(), list(prompts)).cpu()
        del frozen
        refined = [[row.detach().cpu()] for row in z]
        records = [{"steps": steps, "objective_before": round(float(b), 4), "objective_after": round(float(a), 4)}
                   for b, a in zip(before, after)]
        return refined, records

    def _latents(self, nz: int, seed: int, params: dict[str, Any]) -> list[torch.Tensor]:
        """The latent of a seed, drawn on the CPU so it is the same on every device; or a slerp walk of them."""
        start = latent(nz, seed) * params["truncation"]
        if not params["frames"]:
            return [start]
        end = latent(nz, params["to_seed"] if params["to_seed"] is not None else seed + 1) * params["truncation"]
        return [slerp(start, end, t / (params["frames"] - 1)) for t in range(params["frames"])]

    @torch.inference_mode()
    def _decode(self, gan: DCGAN, latents: Sequence[torch.Tensor]):
        from PIL import Image

        z = torch.stack(list(latents)).to(self.manager.device, self.dtype)
        pixels = ((gan(z).float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
        return [Image.fromarray(p) for p in pixels.numpy()]  # one device->host copy for the whole batch

    @staticmethod
    def _resize(image, params: dict[str, Any]):
        from PIL import Image

        if not params["size"]:
            return image
        return image.resize((params["size"],) * 2, getattr(Image.Resampling, params["upscale_filter"].upper()))


def latent(nz: int, seed: int) -> torch.Tensor:
    return torch.randn(nz, 1, 1, generator=torch.Generator("cpu").manual_seed(seed))


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation: keeps the in-between latents at a typical norm, so the frames stay faces."""
    if t in (0.0, 1.0):  # exact ends: the strip starts and ends on the two seeds' own images
        return a if t == 0.0 else b
    cos = torch.dot(a.flatten(), b.flatten()) / (a.norm() * b.norm())
    omega = torch.arccos(cos.clamp(-1, 1))
    if omega.abs() < 1e-6:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


def _strip(frames: list):
    """One image, or frames side by side."""
    from PIL import Image

    if len(frames) == 1:
        return frames[0]
    strip = Image.new("RGB", (frames[0].width * len(frames), frames[0].height))
    for i, frame in enumerate(frames):
        strip.paste(frame, (i * frame.width, 0))
    return strip
