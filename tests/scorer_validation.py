"""The scorer's validation set: pairs the project makes itself whose right order is known, and its accuracy.

`python tests/scorer_validation.py` prints the per-part, per-modality accuracy table shown in docs/scorer.md;
`test_scorer_validation.py` holds the scorer to it.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).parent / "data" / "scorer_text_pairs.json"


@dataclass
class Pair:
    modality: str
    part: str  # the part that must order them: relevance, novelty or quality
    what: str  # how the worse one was made
    better: Any
    worse: Any
    prompt: str
    worse_prompt: str | None = None  # relevance pairs may judge one output against two prompts
    library: list[Any] = field(default_factory=list)  # what the team already made (novelty pairs)


def _shuffle_words(text: str, seed: int) -> str:
    words = text.rstrip(".").split()
    random.Random(seed).shuffle(words)
    return " ".join(words) + "."


def _near_copy(text: str) -> str:
    """The same sentence lightly edited, as a lazy rewrite would be."""
    return text.replace("The ", "A ", 1).replace(" and ", " & ", 1).rstrip(".") + "!"


def text_pairs() -> list[Pair]:
    pairs = []
    for i, row in enumerate(json.loads(DATA.read_text())):
        prompt = row["prompt"]
        pairs.append(Pair("text", "relevance", "unrelated text", row["relevant"], row["unrelated"], prompt))
        pairs.append(
            Pair("text", "quality", "words shuffled", row["relevant"], _shuffle_words(row["relevant"], i), prompt)
        )
        pairs.append(
            Pair(
                "text",
                "novelty",
                "near-copy of a library entry",
                row["other"],
                _near_copy(row["relevant"]),
                prompt,
                library=[row["relevant"]],
            )
        )
    return pairs


def image_pairs(manager) -> list[Pair]:
    from PIL import Image, ImageEnhance, ImageFilter

    import aigc

    faces = [
        a.data.resize((256, 256), Image.Resampling.BICUBIC)
        for a in aigc.generate("image", "portrait", backend="gan", n=6, seed=100, manager=manager)
    ]
    rng = np.random.default_rng(0)
    pairs = []
    unrelated = ["a red sports car on a highway", "a bowl of soup", "a container ship in a harbour"]
    for i, face in enumerate(faces):
        prompt = "a portrait photo of a person"
        pairs.append(
            Pair(
                "image", "relevance", "unrelated prompt", face, face, prompt, worse_prompt=unrelated[i % len(unrelated)]
            )
        )
        noisy = np.clip(np.asarray(face, np.float32) + rng.normal(0, 40, (256, 256, 3)), 0, 255).astype(np.uint8)
        pairs += [
            Pair("image", "quality", "blurred", face, face.filter(ImageFilter.GaussianBlur(3)), prompt),
            Pair("image", "quality", "noised", face, Image.fromarray(noisy), prompt),
            Pair("image", "quality", "blanked", face, Image.new("RGB", face.size, (128, 128, 128)), prompt),
            Pair(
                "image",
                "novelty",
                "near-copy of a library entry",
                faces[(i + 1) % len(faces)],
                ImageEnhance.Brightness(face).enhance(1.05),
                prompt,
                library=[face],
            ),
        ]
    return pairs


def audio_pairs(manager) -> list[Pair]:
    import aigc
    from aigc.media.audio import Audio

    lines = ["Welcome to the studio.", "The lighthouse keeper opened the door.", "Good night, and thank you."]
    clips = [a.data for a in aigc.generate("audio", lines, seed=1, manager=manager)]
    rng = np.random.default_rng(0)
    pairs = []
    for i, (line, clip) in enumerate(zip(lines, clips, strict=True)):
        x, rate = clip.samples, clip.sample_rate
        mostly_silent = x.copy()
        mostly_silent[len(x) // 10 :] = 0
        near_copy = Audio(np.clip(x + rng.normal(0, 0.002, x.shape).astype(np.float32), -1, 1), rate)
        pairs += [
            Pair("audio", "quality", "clipped", clip, Audio(np.clip(x * 8, -1, 1), rate), line),
            Pair("audio", "quality", "silent", clip, Audio(np.zeros_like(x), rate), line),
            Pair("audio", "quality", "mostly silent", clip, Audio(mostly_silent, rate), line),
            Pair(
                "audio",
                "novelty",
                "near-copy of a library entry",
                clips[(i + 1) % len(clips)],
                near_copy,
                line,
                library=[clip],
            ),
        ]
    return pairs


def evaluate(scorer, pairs: list[Pair]) -> dict[tuple[str, str], list[int]]:
    """(modality, part) -> [right, total]: a pair is right when the better item's part is strictly higher."""
    from aigc.scoring.library import Library

    tally: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for pair in pairs:
        library = None
        if pair.library:
            library = Library(tempfile.mkdtemp(prefix="aigc-validation-"))
            library.add(pair.library, scorer=scorer, prompt=pair.prompt)
        better = scorer.score([pair.better], pair.prompt, library=library)[0][pair.part]
        worse = scorer.score([pair.worse], pair.worse_prompt or pair.prompt, library=library)[0][pair.part]
        tally[(pair.modality, pair.part)][0] += int(better is not None and worse is not None and better > worse)
        tally[(pair.modality, pair.part)][1] += 1
    return dict(tally)


def table(tally: dict[tuple[str, str], list[int]]) -> str:
    rows = ["| modality | part | pairs right | accuracy |", "|---|---|---|---|"]
    for (modality, part), (right, total) in sorted(tally.items()):
        rows.append(f"| {modality} | {part} | {right}/{total} | {right / total:.0%} |")
    right = sum(r for r, _ in tally.values())
    total = sum(t for _, t in tally.values())
    rows.append(f"| **all** | | **{right}/{total}** | **{right / total:.0%}** |")
    return "\n".join(rows)


if __name__ == "__main__":
    from aigc.runtime.devices import DeviceManager
    from aigc.scoring.scorer import CreativityScorer

    manager = DeviceManager("cpu")
    scorer = CreativityScorer(manager)
    pairs = text_pairs() + image_pairs(manager) + audio_pairs(manager)
    print(table(evaluate(scorer, pairs)))
