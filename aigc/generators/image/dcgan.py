"""The DCGAN generator network, reading its weights safely, and the latent a seed picks."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import torch
from torch import nn

from ...errors import ModelLoadError

_NESTED_KEYS = ("netG_state_dict", "generator", "state_dict", "model")


class DCGAN(nn.Module):
    """The DCGAN generator of the PyTorch tutorial: a latent of size nz, upsampled 4 -> 8 -> ... -> size."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(pairwise(channels)):
            first, last = i == 0, i == len(channels) - 2
            layers.append(nn.ConvTranspose2d(cin, cout, 4, 1 if first else 2, 0 if first else 1, bias=False))
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(cout), nn.ReLU(True)]
        self.main = nn.Sequential(*layers)
        self.nz = channels[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A generator state dict from .safetensors or a torch file (weights only: never arbitrary pickles)."""
    state: object  # checked below: a dict of tensors, perhaps nested under one of _NESTED_KEYS
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelLoadError(
            f"cannot read GAN weights from {path}: it is a pickle that needs code to load, and aigc loads weights "
            "only (torch.load(weights_only=True)); where you trust the file, save its state dict as safetensors "
            "(safetensors.torch.save_file(state_dict, 'generator.safetensors')) and pass that."
        ) from None
    except Exception as error:  # noqa: BLE001 - torch and safetensors raise many types on damaged files
        summary = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"cannot read GAN weights from {path}: {summary}") from None
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
            "Expected ConvTranspose2d(4x4) + BatchNorm2d + ReLU blocks ending in Tanh, as in the PyTorch DCGAN "
            "tutorial."
        ) from None
    return model.eval()


def latent(nz: int, seed: int) -> torch.Tensor:
    """The latent of a seed, drawn on the CPU so it is the same on every device."""
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


def refine(
    gan: DCGAN, z: torch.Tensor, objective, prompts: list[str], steps: int, rate: float, prior_weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient ascent (Adam) on latents: objective(image) minus a penalty for leaving the prior's typical shell.

    A standard normal latent of size nz has squared norm close to nz; keeping |z|^2 / nz near 1 keeps the
    generator on inputs it was trained on, so a face stays a face while it moves toward the prompt. Adam is
    elementwise and the objective scores each image alone, so a latent refines the same in any batch.
    Returns the refined latents and the objective before and after, per latent.
    """
    dtype = next(gan.parameters()).dtype
    z = z.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=rate)
    for parameter in gan.parameters():
        parameter.requires_grad_(False)
    before = None
    for _ in range(steps):
        optimizer.zero_grad()
        score = objective(gan(z.to(dtype)).float(), prompts)
        before = score.detach().cpu() if before is None else before
        drift = (z.pow(2).flatten(1).mean(dim=1) - 1).pow(2)
        (-(score - prior_weight * drift)).sum().backward()
        optimizer.step()
    with torch.no_grad():
        after = objective(gan(z.to(dtype)).float(), prompts).cpu()
    assert before is not None, "refine takes at least one step"  # the GAN backend refines only when refine >= 1
    return z.detach(), before, after
