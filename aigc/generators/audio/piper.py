"""Piper voices (VITS exported to ONNX) run with onnxruntime, with phonemes from eSpeak NG.

The GPL `piper-tts` engine is not used: eSpeak NG comes from the `espeakng-loader` wheel (library and
data, no apt step) and is called through ctypes; the voice runs in onnxruntime.

Seeds: the exported graph draws its noise with RandomNormalLike, whose generator is seeded once when the
session is built and then advances, so two runs of one session never match. At load we replace each
RandomNormalLike node by a slice of a graph input that we fill from a seeded numpy generator: the same
seed then gives the same voice, on every run, alone or among other outputs.
"""

from __future__ import annotations

import ctypes
import json
import re
import threading
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import ModelLoadError

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

NOISE_SIZE = 192 * 8192  # enough normal samples for ~90 s of speech in one sentence
_CLAUSE = re.compile(r"([^,;:.!?]+)([,;:.!?]*)")
_espeak_lock = threading.Lock()  # eSpeak NG keeps global state
_espeak: ctypes.CDLL | None = None


def _espeak_library(voice: str) -> ctypes.CDLL:
    global _espeak
    if _espeak is None:
        try:
            import espeakng_loader
        except ImportError:
            raise ModelLoadError("speech needs eSpeak NG: `pip install espeakng-loader` (or `make setup`).") from None
        lib = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        data_parent = str(Path(espeakng_loader.get_data_path()).parent)
        if lib.espeak_Initialize(2, 0, data_parent.encode(), 0) <= 0:  # 2: synchronous, no audio device
            raise ModelLoadError(f"eSpeak NG could not start with its data under {data_parent}.")
        _espeak = lib
    if _espeak.espeak_SetVoiceByName(voice.encode()) != 0:
        raise ModelLoadError(f"eSpeak NG has no voice {voice!r}.")
    return _espeak


@lru_cache(maxsize=4096)  # a request checks its text before loading, then speaks it: phonemized once
def phonemize(text: str, voice: str = "en-us") -> str:
    """IPA for `text`, clause by clause, keeping the clause punctuation that Piper voices pause on."""
    pieces: list[str] = []
    with _espeak_lock:
        lib = _espeak_library(voice)
        for words, punctuation in _CLAUSE.findall(text):
            if not words.strip():
                continue
            buffer = ctypes.create_string_buffer(words.encode("utf-8"))
            pointer = ctypes.c_void_p(ctypes.addressof(buffer))
            ipa: list[str] = []
            while pointer.value:
                out = lib.espeak_TextToPhonemes(ctypes.byref(pointer), 1, 0x02)  # 1: UTF-8 text, 0x02: IPA
                if out:
                    ipa.append(out.decode("utf-8").strip())
            spoken = " ".join(p for p in ipa if p)
            if spoken:
                pieces.append(spoken + punctuation[:1])
    return " ".join(pieces)


@dataclass
class PiperVoice:
    session: InferenceSession
    phoneme_ids: dict[str, list[int]]
    sample_rate: int
    espeak_voice: str
    noise_scale: float
    length_scale: float
    noise_w: float

    def ids(self, phonemes: str) -> list[int]:
        """Piper's id sequence: ^ _ then each known symbol followed by _, then $."""
        pad = self.phoneme_ids["_"]
        ids = [*self.phoneme_ids["^"], *pad]
        for symbol in unicodedata.normalize("NFD", phonemes):
            if symbol in self.phoneme_ids:
                ids += [*self.phoneme_ids[symbol], *pad]
        return ids + self.phoneme_ids["$"]

    def speak(self, ids: list[int], rng: np.random.Generator, speed: float, variation: float) -> np.ndarray:
        feeds = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array(
                [self.noise_scale * variation, self.length_scale / speed, self.noise_w * variation], dtype=np.float32
            ),
        }
        for name in _noise_inputs(self.session):
            feeds[name] = rng.standard_normal(NOISE_SIZE, dtype=np.float32)
        return self.session.run(None, feeds)[0].reshape(-1)


def _noise_inputs(session) -> list[str]:
    return [i.name for i in session.get_inputs() if i.name.startswith("aigc_noise_")]


def _config(onnx_path: Path) -> tuple[dict | None, str | None]:
    """A Piper voice's .onnx.json, or why it is not usable (missing, not JSON, lacking what a voice needs)."""
    config_path = onnx_path.with_name(onnx_path.name + ".json")
    if not config_path.is_file():
        return None, f"{onnx_path} needs its Piper config beside it ({config_path.name})."
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        return None, f"{config_path.name} is not readable JSON ({error})."
    if not isinstance(config, dict) or not isinstance(config.get("phoneme_id_map"), dict):
        return None, f"{config_path.name} is not a Piper voice config (no phoneme_id_map)."
    rate = (config.get("audio") or {}).get("sample_rate") if isinstance(config.get("audio"), dict) else None
    if not isinstance(rate, int) or not 1000 <= rate <= 192000:
        return None, f"{config_path.name} gives no usable audio.sample_rate."
    if not all(isinstance(config["phoneme_id_map"].get(s), list) for s in ("^", "_", "$")):
        return None, f"{config_path.name}'s phoneme_id_map lacks the ^, _ and $ symbols a Piper voice has."
    return config, None


def config_problem(onnx_path: Path) -> str | None:
    """Why a Piper .onnx cannot be a voice (read from its .onnx.json alone), or None."""
    return _config(onnx_path)[1]


def load_voice(onnx_path: Path, threads: int | None = None) -> PiperVoice:
    config, problem = _config(onnx_path)
    if config is None:
        raise ModelLoadError(problem or f"{onnx_path} is not a usable Piper voice.")
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(_with_seeded_noise(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"cannot load the Piper voice {onnx_path}: {error}") from error
    inference = config.get("inference", {})
    return PiperVoice(
        session,
        config["phoneme_id_map"],
        int(config["audio"]["sample_rate"]),
        config.get("espeak", {}).get("voice", "en-us"),
        float(inference.get("noise_scale", 0.667)),
        float(inference.get("length_scale", 1.0)),
        float(inference.get("noise_w", 0.8)),
    )


def _with_seeded_noise(onnx_path: Path) -> bytes:
    """The voice graph with every RandomNormalLike(x) replaced by Reshape(Slice(noise_input, 0, Size(x)), Shape(x))."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    nodes = list(graph.node)
    del graph.node[:]
    graph.initializer.append(helper.make_tensor("aigc_zero", TensorProto.INT64, [1], [0]))
    graph.initializer.append(helper.make_tensor("aigc_one_dim", TensorProto.INT64, [1], [1]))
    for index, node in enumerate(nodes):
        if node.op_type != "RandomNormalLike":
            graph.node.append(node)
            continue
        source, out, tag = node.input[0], node.output[0], f"aigc_noise_{index}"
        graph.input.append(helper.make_tensor_value_info(tag, TensorProto.FLOAT, [NOISE_SIZE]))
        graph.node.extend(
            [
                helper.make_node("Shape", [source], [f"{tag}_shape"]),
                helper.make_node("Size", [source], [f"{tag}_size"]),
                helper.make_node("Reshape", [f"{tag}_size", "aigc_one_dim"], [f"{tag}_end"]),
                helper.make_node("Slice", [tag, "aigc_zero", f"{tag}_end"], [f"{tag}_flat"]),
                helper.make_node("Reshape", [f"{tag}_flat", f"{tag}_shape"], [out]),
            ]
        )
    return model.SerializeToString()
