"""What each part and sub-part of the creativity score means, in one sentence each: the one place a front end
(the studio's Judge view, GET /v1/scoring) reads them from. Names are as asset records hold them in `scores`."""

from __future__ import annotations

MEANINGS: dict[str, str] = {
    "score": "The creativity score: the weighted geometric mean of relevance, novelty and quality, so a zero in any "
    "one part sinks it.",
    "relevance": "How well the output answers its prompt (text: sentence-embedding similarity; image: CLIP, or "
    "offline the classifier's labels compared with the prompt; audio: CLAP, else not measured).",
    "novelty": "How far the output is from the obvious: the mean of its distance from the other candidates, the "
    "team library and (text) the model's most predictable answer.",
    "novelty.candidates": "Distance from the most similar other candidate of the same request (1 = unlike all "
    "of them).",
    "novelty.library": "Distance from the most similar asset in the team library (1 = unlike anything made before).",
    "novelty.obvious": "Distance from the model's greedy continuation of the prompt (1 = not the answer everyone "
    "would expect).",
    "quality": "How well made the output is, regardless of the prompt (no loops in text, a clear picture, clean "
    "sound).",
    "quality.fluency": "How natural the words read to a small language model (low perplexity = fluent).",
    "quality.distinct": "How few words and phrases repeat (distinct 1-, 2- and 3-word sequences): low means loops.",
    "quality.sharpness": "How crisp edges are (the spread of a Laplacian): low means blurred or flat.",
    "quality.exposure": "Whether brightness sits in a usable range without large burnt-out or crushed areas.",
    "quality.noise": "How free of grain the picture is (an estimate of the noise level): low means noisy.",
    "quality.contrast": "How wide the range of brightness is: low means a flat, washed-out picture.",
    "quality.silence": "How much of the clip is sound rather than silence.",
    "quality.clipping": "How few samples hit full scale: low means distorted, clipped audio.",
    "quality.level": "Whether the loudness sits in a comfortable listening range.",
    "taste": "How much the team would like it, predicted by a model learned from the team's thumbs and choices in "
    "the library (shown only once that model beats chance).",
    "taste_accuracy": "How often the taste model predicted held-out ratings right (0.5 = chance).",
    "taste_ratings": "How many ratings the taste model learned from.",
}
