"""aigc's Stable Diffusion loop (generators/image/denoise.py) against the stock diffusers pipeline on the tiny random
model: the same pixels, fewer text-encoder rows, no device reads inside the loop, and switches that work."""

from __future__ import annotations

import contextlib
import inspect
import shutil

import numpy as np
import pytest
import torch
from conftest import SD_SIZE as SIZE
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakTensorKeyDictionary

from aigc.generators.image import denoise
from aigc.generators.image.diffusion import SCHEDULERS, DiffusionGenerator
from aigc.runtime.devices import DeviceManager

# Pixels may differ from stock diffusers by 1 level of 255: the maths and the random numbers are the stock
# pipeline's, but other kernels (channels-last convolutions, fused q/k/v matmuls) may round floats differently.
# Measured on this CPU in float32: 0 with the defaults (fused q/k/v; channels-last is off on the CPU), 1 with
# channels_last=True. A wrong seed, step count or scheduler is off by tens of levels (checked below).
TOLERANCE = 1


@pytest.fixture(scope="module")
def sd_manager() -> DeviceManager:
    return DeviceManager("cpu")


@pytest.fixture(scope="module")
def stock(tiny_sd):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None)


def gradient():
    from PIL import Image

    ramp = np.linspace(0, 255, SIZE, dtype=np.uint8)
    return Image.fromarray(np.stack([np.tile(ramp, (SIZE, 1))] * 3, axis=-1))


def stock_view(stock, scheduler: str | None = None, img2img: bool = False):
    """The stock text- or image-to-image pipeline over the same modules, with a fresh scheduler."""
    import diffusers

    cls = diffusers.StableDiffusionImg2ImgPipeline if img2img else diffusers.StableDiffusionPipeline
    scheduler_cls = getattr(diffusers, SCHEDULERS[scheduler]) if scheduler else type(stock.scheduler)
    pipe = cls.from_pipe(stock, scheduler=scheduler_cls.from_config(stock.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def stock_images(
    stock, prompts, seeds, *, scheduler=None, steps=2, guidance=7.5, negative_prompt=None, init_image=None, strength=0.8
):
    """What a diffusers user writes: the pipeline call with one seeded generator per image."""
    pipe = stock_view(stock, scheduler, init_image is not None)
    kwargs = {
        "num_inference_steps": steps,
        "guidance_scale": guidance,
        "generator": [torch.Generator().manual_seed(s) for s in seeds],
    }
    if negative_prompt is not None:
        kwargs["negative_prompt"] = [negative_prompt] * len(prompts)
    if init_image is None:
        kwargs.update(width=SIZE, height=SIZE)
    else:
        kwargs.update(image=[init_image] * len(prompts), strength=strength)
    return pipe(list(prompts), **kwargs).images


def generate(model, manager, prompts, seeds, **given):
    given = {"steps": 2, "width": SIZE, "height": SIZE, **given}
    return DiffusionGenerator(model, manager).generate(prompts, seeds, **DiffusionGenerator.check_params(given))


def furthest(images, others) -> int:
    """The largest pixel difference between paired images, in levels of 255."""
    return max(
        int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())
        for a, b in zip(images, others, strict=True)
    )


def cached_pipe(manager, model, **switches):
    """The pipeline the manager holds for these module switches (the defaults for those not given)."""
    generator = DiffusionGenerator(model, manager)
    key = manager.key(generator.family, model, variant=generator.variant(DiffusionGenerator.check_params(switches)))
    with manager.use(key, lambda: None) as pipe:
        assert pipe is not None, "load the model with these switches first"
        return pipe


CASES = {
    "guided": {},
    "unguided": {"guidance": 0.0},
    "negative prompt": {"negative_prompt": "fog"},
    "image-to-image": {"init_image": gradient, "strength": 0.6, "steps": 4},
}


@pytest.mark.parametrize(
    "case, scheduler",
    [(case, None) for case in CASES]
    + [(case, name) for name in sorted(SCHEDULERS) for case in ("guided", "image-to-image")],
)
def test_the_loop_gives_the_stock_pipelines_pixels(tiny_sd, sd_manager, stock, case, scheduler):
    given = {**CASES[case], "scheduler": scheduler}
    if "init_image" in given:
        given["init_image"] = given["init_image"]()
    prompts, seeds = ["a castle", "a cat", "a castle"], [1, 2, 3]
    ours = generate(tiny_sd, sd_manager, prompts, seeds, **given)
    assert "aigc-loop" in ours[0].info["fast"]
    assert furthest([o.data for o in ours], stock_images(stock, prompts, seeds, **given)) <= TOLERANCE


def test_the_tolerance_is_far_below_a_real_difference(tiny_sd, sd_manager, stock):
    ours = [o.data for o in generate(tiny_sd, sd_manager, ["a castle"], [1])]
    assert furthest(ours, stock_images(stock, ["a castle"], [2])) > 10 * TOLERANCE  # another seed
    assert furthest(ours, stock_images(stock, ["a castle"], [1], steps=3)) > 10 * TOLERANCE  # another step count
    assert furthest(ours, stock_images(stock, ["a castle"], [1], scheduler="ddim")) > 10 * TOLERANCE


def test_step_noise_comes_from_each_images_own_generator(tiny_sd, sd_manager):
    """euler_a draws noise in every step(): an image must still be the same alone or in a batch."""
    batch = generate(tiny_sd, sd_manager, ["a castle", "a cat", "a castle"], [1, 2, 3], scheduler="euler_a", steps=3)
    alone = generate(tiny_sd, sd_manager, ["a castle"], [3], scheduler="euler_a", steps=3)
    assert furthest([batch[2].data], [alone[0].data]) <= TOLERANCE
    assert furthest([batch[0].data], [alone[0].data]) > 10 * TOLERANCE  # same prompt, another seed


def test_fast_paths_off_and_on_agree_and_the_switches_change_the_modules(tiny_sd):
    from diffusers.models.attention_processor import AttnProcessor2_0, FusedAttnProcessor2_0

    manager = DeviceManager("cpu")
    prompts, seeds = ["a castle", "a cat"], [1, 2]
    off = generate(tiny_sd, manager, prompts, seeds, fast_loop=False, fuse_qkv=False, channels_last=False)
    on = generate(tiny_sd, manager, prompts, seeds, channels_last=True)  # the default only with CUDA
    assert off[0].info["fast"] == ["batched-cfg", "sdpa"]  # the stock call batches guidance too
    assert on[0].info["fast"] == ["aigc-loop", "prompt-reuse", "batched-cfg", "fused-qkv", "channels-last", "sdpa"]
    assert furthest([o.data for o in off], [o.data for o in on]) <= TOLERANCE
    assert manager.stats()["loads"] == 2  # two cached copies: the unfused one was never fused

    plain = cached_pipe(manager, tiny_sd, fuse_qkv=False, channels_last=False)
    tuned = cached_pipe(manager, tiny_sd, channels_last=True)
    for module, conv in ((tuned.unet, tuned.unet.conv_in), (tuned.vae, tuned.vae.encoder.conv_in)):
        assert {type(p) for p in module.attn_processors.values()} == {FusedAttnProcessor2_0}
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    for module, conv in ((plain.unet, plain.unet.conv_in), (plain.vae, plain.vae.encoder.conv_in)):
        assert {type(p) for p in module.attn_processors.values()} == {AttnProcessor2_0}  # SDPA, never the classic one
        assert not conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not hasattr(plain.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1, "to_qkv")
    assert hasattr(tuned.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1, "to_qkv")


def test_loop_switches_off_give_the_same_images_with_stock_call_counts(stock):
    pipe, calls = stock_view(stock), {"unet": 0, "rows": 0}
    hooks = [
        pipe.unet.register_forward_hook(lambda *_: calls.update(unet=calls["unet"] + 1)),
        pipe.text_encoder.register_forward_hook(
            lambda module, args, output: calls.update(rows=calls["rows"] + len(args[0]))
        ),
    ]
    try:

        def run(**switches):
            calls.update(unet=0, rows=0)
            generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
            images, _ = denoise.generate(
                pipe, ["a castle"] * 2, generators, steps=2, guidance=7.5, width=SIZE, height=SIZE, **switches
            )
            return images, dict(calls)

        fast, fast_calls = run()
        slow, slow_calls = run(reuse_prompts=False, batch_cfg=False)
    finally:
        for hook in hooks:
            hook.remove()
    assert fast_calls == {"unet": 3, "rows": 2}  # PNDM's 2 steps are 3 UNet evaluations
    assert slow_calls == {"unet": 6, "rows": 4}
    assert furthest(fast, slow) <= TOLERANCE


def test_each_distinct_prompt_is_encoded_once(tiny_sd, sd_manager):
    generate(tiny_sd, sd_manager, ["a castle"], [1])  # load, so the hook goes on the cached model
    rows: list[int] = []
    hook = cached_pipe(sd_manager, tiny_sd).text_encoder.register_forward_hook(
        lambda module, args, output: rows.append(args[0].shape[0])
    )
    try:

        def encoded(prompts, **given):
            rows.clear()
            generate(tiny_sd, sd_manager, prompts, list(range(len(prompts))), steps=1, **given)
            return list(rows)

        assert encoded(["a castle"] * 4) == [2]  # one call: the prompt and the empty unconditional prompt
        assert encoded(["a castle"] * 4, fast_loop=False) == [4, 4]  # stock: every image's prompt, then its uncond
        assert encoded(["a castle"] * 4, guidance=1.0) == [1]  # no guidance: no unconditional prompt at all
        assert encoded(["a castle", "a cat"] * 2, negative_prompt="fog") == [3]
    finally:
        hook.remove()


class DeviceReads(TorchDispatchMode):
    """Records the aten ops that bring a device tensor's value to the host: each stalls the CPU until the GPU
    has finished everything queued before it.

    On this CPU-only machine every tensor is a CPU tensor, so where each would live on a GPU is tracked
    instead: the `host` tensors (the scheduler's tables, which diffusers keeps on the CPU) and whatever is
    computed from them alone are host-side; every other tensor (latents, embeddings, weights, the UNet's
    timesteps) is device-side. `.cpu()`/`.tolist()` of a CPU tensor dispatch no op here, hence the source check.
    """

    READS = {
        torch.ops.aten._local_scalar_dense,
        torch.ops.aten.is_nonzero,
        torch.ops.aten.item,
        torch.ops.aten.equal,
        torch.ops.aten.nonzero,
        torch.ops.aten.masked_select,
        torch.ops.aten._unique2,
        torch.ops.aten.unique_consecutive,
        torch.ops.aten.allclose,
    }

    def __init__(self, host) -> None:
        super().__init__()
        self.host = WeakTensorKeyDictionary()
        for tensor in host:
            self.host[tensor] = True
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        host_side = bool(inputs) and all(t in self.host for t in inputs)
        if func.overloadpacket in self.READS and not host_side:
            self.reads.append(func.overloadpacket.__name__)
        out = func(*args, **kwargs)
        if host_side:
            for tensor in tree_leaves(out):
                if isinstance(tensor, torch.Tensor):
                    self.host[tensor] = True
        return out


def scheduler_tables(scheduler, but=()):
    return [value for name, value in vars(scheduler).items() if isinstance(value, torch.Tensor) and name not in but]


@pytest.mark.parametrize("img2img", [False, True], ids=["txt2img", "img2img"])
@pytest.mark.parametrize("scheduler", [None, *sorted(SCHEDULERS)])
def test_the_loop_never_reads_a_device_value_and_the_stock_loop_does(stock, scheduler, img2img):
    prompts, seeds = ["a castle", "a cat"], [1, 2]
    pipe = stock_view(stock, scheduler, img2img)
    with torch.inference_mode():
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        inputs = denoise.prepare(
            pipe,
            prompts,
            generators,
            steps=3,
            guidance=7.5,
            width=SIZE,
            height=SIZE,
            init=gradient() if img2img else None,
            strength=0.6,
        )
        with DeviceReads(scheduler_tables(pipe.scheduler)) as ours:
            denoise.loop(pipe.unet, pipe.scheduler, inputs)
    assert ours.reads == []
    source = inspect.getsource(denoise.loop)
    assert not [word for word in (".item(", ".cpu(", ".tolist(", ".numpy(", "nonzero", "bool(") if word in source]
    if img2img:
        return  # stock img2img sets the scheduler's begin index: only PNDM and DDIM read there (every step)

    # the stock pipeline puts its timesteps on the device (retrieve_timesteps(..., device)): same recorder,
    # entered where its progress bar spans exactly its denoising loop
    pipe = stock_view(stock, scheduler)
    recorders = []

    @contextlib.contextmanager
    def progress_bar(total=None, **kwargs):
        with DeviceReads(scheduler_tables(pipe.scheduler, but=("timesteps",))) as recorder:
            recorders.append(recorder)
            yield type("Bar", (), {"update": lambda self, n=1: None})()

    pipe.progress_bar = progress_bar
    pipe(
        prompts,
        num_inference_steps=3,
        guidance_scale=7.5,
        width=SIZE,
        height=SIZE,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
    )
    assert recorders[0].reads  # PNDM/DDIM: alphas_cumprod[t] and `prev_t >= 0` each step; the others: nonzero()


@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile on the CPU needs a C compiler")
def test_compiled_blocks_match_eager(tiny_sd, sd_manager):
    prompts, seeds = ["a castle", "a cat"], [1, 2]
    eager = generate(tiny_sd, sd_manager, prompts, seeds)
    compiled = generate(tiny_sd, sd_manager, prompts, seeds, compile=True)
    assert "compiled" in compiled[0].info["fast"]
    assert furthest([o.data for o in eager], [o.data for o in compiled]) <= TOLERANCE
    blocks = [
        m
        for m in cached_pipe(sd_manager, tiny_sd, compile=True).unet.modules()
        if type(m).__name__ == "BasicTransformerBlock"
    ]
    assert blocks and all(b._compiled_call_impl is not None for b in blocks)  # regional: the blocks, not the UNet
    eager_block = cached_pipe(sd_manager, tiny_sd).unet.down_blocks[1].attentions[0].transformer_blocks[0]
    assert eager_block._compiled_call_impl is None  # the default copy was never compiled


def test_vae_tiling_only_for_large_images_unless_asked(tiny_sd, sd_manager):
    wide = 1040  # > diffusion.TILE_ABOVE; the tiny VAE's tiles are 64 px
    normal = generate(tiny_sd, sd_manager, ["a castle"], [1])[0]
    tiled = generate(tiny_sd, sd_manager, ["a castle"], [1], width=wide, steps=1)[0]
    untiled = generate(tiny_sd, sd_manager, ["a castle"], [1], width=wide, steps=1, vae_tiling=False)[0]
    assert "vae-tiling" not in normal.info["fast"] and "vae-tiling" not in untiled.info["fast"]
    assert "vae-tiling" in tiled.info["fast"]
    assert tiled.data.size == untiled.data.size == (wide, SIZE)
    assert furthest([tiled.data], [untiled.data]) > TOLERANCE  # tiles really decoded apart (and blended)


@pytest.fixture(scope="module", params=[True, False], ids=["flags-all", "flags-none"])
def sd_with_checker(request, tiny_sd, tmp_path_factory):
    """The tiny pipeline with a tiny random safety checker whose thresholds flag every image, or none."""
    from diffusers import StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    checker = StableDiffusionSafetyChecker(config).eval()
    with torch.no_grad():  # score = cosine - threshold: below -1 flags everything, above 1 nothing
        for weights in (checker.concept_embeds_weights, checker.special_care_embeds_weights):
            weights.fill_(-2.0 if request.param else 2.0)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None)
    pipe.register_modules(safety_checker=checker, feature_extractor=CLIPImageProcessor(crop_size=32, size=32))
    pipe.register_to_config(requires_safety_checker=True)
    path = tmp_path_factory.mktemp("tiny-sd-checker")
    pipe.save_pretrained(path)
    return str(path), request.param


def test_the_safety_checker_still_works(sd_with_checker, sd_manager):
    from diffusers import StableDiffusionPipeline

    model, flags_all = sd_with_checker
    prompts, seeds = ["a castle", "a cat"], [1, 2]
    ours = generate(model, sd_manager, prompts, seeds, safety_checker=True)
    stock = StableDiffusionPipeline.from_pretrained(model)
    stock.set_progress_bar_config(disable=True)
    theirs = stock(
        prompts,
        num_inference_steps=2,
        width=SIZE,
        height=SIZE,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
    )
    assert [o.info["nsfw"] for o in ours] == theirs.nsfw_content_detected == [flags_all] * 2
    assert "aigc-loop" in ours[0].info["fast"]
    assert furthest([o.data for o in ours], theirs.images) <= TOLERANCE
    assert all((np.asarray(o.data).max() == 0) == flags_all for o in ours)  # flagged: black
