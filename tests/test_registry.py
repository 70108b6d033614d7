"""The backend registry: built-ins, third-party backends through entry points, and a contract every backend keeps."""

from __future__ import annotations

import sys
import textwrap

import pytest
from PIL import Image

import aigc
from aigc.runtime import registry

PLUGIN = '''
from aigc.generators.base import Generator, Output, Param


class MirrorGenerator(Generator):
    """A third-party text backend: writes the prompt backwards, `times` times."""

    kind = "text"
    family = "mirror"
    params = {"times": Param(1, "repetitions", "int", 1, 5)}

    def generate(self, prompts, seeds, **params):
        return [Output(p[::-1] * params["times"], {"seed_seen": s}) for p, s in zip(prompts, seeds)]
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Install a tiny plug-in distribution (a .dist-info with an entry point) on sys.path."""
    (tmp_path / "aigc_mirror.py").write_text(PLUGIN)
    info = tmp_path / "aigc_mirror-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aigc-mirror\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent("""
        [aigc.generators]
        text.mirror = aigc_mirror:MirrorGenerator
        text.lm = aigc_mirror:MirrorGenerator
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("aigc_mirror", None)


def test_entry_point_backends_plug_in(plugin, manager):
    assert ("text", "mirror") in registry.backends()
    asset = aigc.generate("text", "abc", backend="mirror", model="any", times=2, seed=3, manager=manager)[0]
    assert asset.data == "cbacba" and asset.backend == "mirror" and asset.info == {"seed_seen": 3}
    with pytest.raises(aigc.ConfigError, match="unknown parameter 'temperature'.*allowed: times"):
        aigc.generate("text", "abc", backend="mirror", model="any", temperature=1.0, manager=manager)


def test_a_plugin_cannot_shadow_a_builtin(plugin):
    assert registry.get("text", "lm").target == "aigc.generators.text.causal_lm:CausalLMGenerator"


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(aigc.ConfigError, match="use 'audio', 'image' or 'text'"):
        registry.get("sound")
    with pytest.raises(aigc.BackendNotFoundError, match="use 'gpt2' or 'lm'"):
        registry.get("text", "llama.cpp")


def test_listing_backends_does_not_import_them():
    import subprocess

    code = (
        "import sys; from aigc.runtime import registry; registry.backends(); registry.get('text');"
        "assert 'torch' not in sys.modules and 'aigc.generators.text.causal_lm' not in sys.modules"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# For each built-in backend: the tiny model fixture it runs on, knobs that keep it fast, how it saves.
CONTRACT = {
    "lm": ("tiny_gpt2", {"max_new_tokens": 4}, ".txt"),
    "gpt2": ("tiny_gpt2", {"max_new_tokens": 4}, ".txt"),
    "gan": ("tiny_dcgan", {}, ".png"),
    "diffusion": ("tiny_sd", {"steps": 2, "width": 64, "height": 64}, ".png"),
    "speech": ("piper_voice", {}, ".wav"),
    "music": ("tiny_musicgen", {"duration": 0.2}, ".flac"),
    "upscale": ("tiny_upscaler", {"init_image": Image.linear_gradient("L").resize((16, 12)).convert("RGB")}, ".png"),
}


@pytest.fixture(scope="module")
def tiny_upscaler(tmp_path_factory) -> str:
    """A random Real-ESRGAN compact x4 model (tests/upscalers.py), saved as realesr-general-x4v3.pth is."""
    from upscalers import compact_state, save

    return save(compact_state(), tmp_path_factory.mktemp("upscaler") / "compact-x4.pth", wrap="params")


def _same(a, b, atol: float = 0.0) -> bool:
    """Equal text, equal pixels, or audio equal within `atol` (16-bit files round to 1/32768)."""
    import numpy as np

    from aigc.media.audio import Audio

    if isinstance(a, str):
        return a == b
    if isinstance(a, Audio):
        return a.sample_rate == b.sample_rate and np.allclose(a.samples, b.samples, atol=atol, rtol=0)
    return np.array_equal(np.asarray(a), np.asarray(b))


def test_every_builtin_backend_has_a_contract_case():
    assert {spec.name for spec in registry.BUILTINS} == set(CONTRACT)


@pytest.mark.parametrize("spec", registry.BUILTINS, ids=lambda s: f"{s.kind}-{s.name}")
def test_every_builtin_backend_keeps_the_contract(spec, request, manager, tmp_path):
    """Count, same seed -> same output, save/load round trip, a bad knob -> ConfigError."""
    fixture, knobs, suffix = CONTRACT[spec.name]
    model = request.getfixturevalue(fixture)

    def run() -> list:
        return aigc.generate(
            spec.kind, ["one", "two"], backend=spec.name, model=model, n=2, seed=5, manager=manager, **knobs
        )

    assets = run()
    assert len(assets) == 4 and all(a.kind == spec.kind and a.backend == spec.name for a in assets)
    assert all(_same(a.data, b.data) for a, b in zip(run(), assets, strict=True))
    loaded = aigc.load(assets[0].save(tmp_path / f"a{suffix}"))
    assert _same(loaded.data, assets[0].data, atol=1e-4) and loaded.seed == 5
    with pytest.raises(aigc.ConfigError):
        aigc.generate(spec.kind, "one", backend=spec.name, model=model, manager=manager, no_such_knob=1)
