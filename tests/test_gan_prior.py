"""`aigc tune image --backend gan`: a latent prior fitted to rated GAN images (their seeds give their latents),
and sampling with `prior=FILE`: more of what was liked, seeds still reproducible, bad files refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import aigc
from aigc.errors import ConfigError
from aigc.media.latent_prior import read_prior
from aigc.runtime.devices import DeviceManager
from aigc.scoring.library import Library
from aigc.tuning.gan_prior import latents_from_ratings

AIGC = str(Path(sys.executable).with_name("aigc"))


def brightness(asset) -> float:
    return float(np.asarray(asset.data, np.float32).mean())


@pytest.fixture(scope="module")
def bright_team(tmp_path_factory, tiny_dcgan):
    """A team that liked the brighter faces and disliked the darker ones, rating real GAN assets."""
    manager = DeviceManager("cpu")
    assets = aigc.generate("image", "a face", model=tiny_dcgan, n=60, seed=0, manager=manager)
    levels = np.array([brightness(a) for a in assets])
    low, high = np.quantile(levels, [0.35, 0.65])
    library = Library(tmp_path_factory.mktemp("team-images"))
    for asset, level in zip(assets, levels, strict=True):
        if level >= high or level <= low:
            library.rate(asset, +1 if level >= high else -1, user="ana")
    return library, float(np.median(levels))


def test_the_prior_draws_more_of_what_the_team_liked_and_keeps_seeds_reproducible(tmp_path, bright_team, tiny_dcgan):
    library, median = bright_team
    rated = latents_from_ratings(library.ratings(), tiny_dcgan)
    assert rated.latents.shape == (len(library.ratings()), 8) and rated.skipped == 0
    out = tmp_path / "bright.safetensors"
    result = subprocess.run(
        [
            AIGC,
            "tune",
            "image",
            "--backend",
            "gan",
            "--from",
            str(library.path),
            "--model",
            tiny_dcgan,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    prior = read_prior(str(out))
    ups = sum(r.value > 0 for r in library.ratings())
    assert (prior.record["liked"], prior.record["disliked"]) == (ups, len(library.ratings()) - ups) and ups >= 20
    assert prior.record["model"] == tiny_dcgan
    assert prior.record["accuracy"] > prior.record["baseline"] and 0 < prior.record["shift"] <= 3.0

    manager = DeviceManager("cpu")
    held_out = dict(n=80, seed=5000, model=tiny_dcgan, manager=manager)
    plain = aigc.generate("image", "a face", **held_out)
    tuned = aigc.generate("image", "a face", prior=str(out), **held_out)
    share = [np.mean([brightness(a) > median for a in group]) for group in (plain, tuned)]
    assert share[1] >= 1.3 * share[0] and share[1] > 0.6, share
    assert tuned[0].params["prior"] == str(out)

    alone = aigc.generate("image", "a face", model=tiny_dcgan, seed=5003, prior=str(out), manager=manager)[0]
    assert alone.data.tobytes() == tuned[3].data.tobytes()  # same seed + same prior = same image, batch or not
    as_json = tmp_path / "bright.json"
    as_json.write_text(json.dumps({**prior.record, "mean": prior.mean.tolist(), "std": prior.std.tolist()}))
    again = aigc.generate("image", "a face", model=tiny_dcgan, seed=5003, prior=str(as_json), manager=manager)[0]
    assert again.data.tobytes() == alone.data.tobytes()


def test_bad_prior_files_fail_in_one_line_before_the_gan_loads(tmp_path, tiny_dcgan):
    manager = DeviceManager("cpu")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps({"format": "aigc-gan-prior", "mean": [float("nan")] * 8, "std": [1.0] * 8}))
    negative = tmp_path / "negative.json"
    negative.write_text(json.dumps({"format": "aigc-gan-prior", "mean": [0.0] * 8, "std": [-1.0] * 8}))
    for bad, message in (
        (tmp_path / "missing.json", "no such file"),
        (corrupt, "not a readable GAN prior"),
        (nan, "no valid Gaussian"),
        (negative, "no valid Gaussian"),
    ):
        with pytest.raises(ConfigError, match=message) as error:
            aigc.generate("image", "x", model=tiny_dcgan, seed=1, prior=str(bad), manager=manager)
        assert error.value.field == "prior"
    assert manager.stats()["loads"] == 0
    wrong = tmp_path / "wide.json"
    wrong.write_text(json.dumps({"format": "aigc-gan-prior", "mean": [0.0] * 100, "std": [1.0] * 100}))
    with pytest.raises(ConfigError, match="100-d latent"):
        aigc.generate("image", "x", model=tiny_dcgan, seed=1, prior=str(wrong), manager=manager)
    result = subprocess.run(
        [AIGC, "generate", "image", "x", "--model", tiny_dcgan, "--prior", str(corrupt), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1 and "prior=" in result.stderr


def test_too_few_or_unusable_ratings_are_refused_with_what_to_do(tmp_path, tiny_dcgan):
    library = Library(tmp_path / "few")
    for asset in aigc.generate("image", "a face", model=tiny_dcgan, n=3, seed=1, manager=DeviceManager("cpu")):
        library.rate(asset, +1)
    library.rate(
        aigc.generate("image", "a face", model=tiny_dcgan, seed=9, refine=0, frames=2, manager=DeviceManager("cpu"))[0],
        -1,
    )  # a strip: not one seed's latent
    result = subprocess.run(
        [
            AIGC,
            "tune",
            "image",
            "--backend",
            "gan",
            "--from",
            str(library.path),
            "--model",
            tiny_dcgan,
            "--out",
            str(tmp_path / "p.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and "at least 4 liked and 4 disliked" in result.stderr
    assert "found 3 liked and 0 disliked (1 rated images skipped" in result.stderr
    assert not (tmp_path / "p.json").exists()


@pytest.fixture
def gan_prior_file(tmp_path) -> Path:
    path = tmp_path / "ok.json"
    path.write_text(json.dumps({"format": "aigc-gan-prior", "mean": [0.5] * 8, "std": [1.0] * 8}))
    return path


def test_ratings_of_images_made_with_a_prior_give_the_prior_s_latents(tmp_path, gan_prior_file, tiny_dcgan):
    from aigc.generators.image.dcgan import latent

    manager = DeviceManager("cpu")
    library = Library(tmp_path / "with-prior")
    made = aigc.generate("image", "a face", model=tiny_dcgan, seed=3, prior=str(gan_prior_file), manager=manager)[0]
    library.rate(made, +1)
    rated = latents_from_ratings(library.ratings(), tiny_dcgan)
    assert rated.skipped == 0
    expected = read_prior(str(gan_prior_file)).apply(latent(8, 3)).reshape(-1).numpy()
    np.testing.assert_allclose(rated.latents[0], expected, rtol=1e-6)
    gan_prior_file.unlink()  # the prior is gone: its latent cannot be told, so the rating is skipped
    assert latents_from_ratings(library.ratings(), tiny_dcgan).skipped == 1


@pytest.mark.pack
def test_the_face_pack_samples_with_a_prior_reproducibly(gan_prior_file, tmp_path):
    wide = tmp_path / "faces.json"
    wide.write_text(json.dumps({"format": "aigc-gan-prior", "mean": [0.3] * 100, "std": [0.9] * 100}))
    manager = DeviceManager("cpu")
    together = aigc.generate("image", "a face", seed=11, n=3, prior=str(wide), backend="gan", manager=manager)
    alone = aigc.generate("image", "a face", seed=12, prior=str(wide), backend="gan", manager=manager)[0]
    plain = aigc.generate("image", "a face", seed=12, backend="gan", manager=manager)[0]
    assert alone.data.tobytes() == together[1].data.tobytes() and alone.data.tobytes() != plain.data.tobytes()
    assert alone.data.size == (64, 64)
