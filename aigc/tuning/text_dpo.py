"""Fine-tune a text model toward the team's choices: DPO through TRL's DPOTrainer, as a LoRA adapter through
PEFT. No training loop of our own: TRL owns the loss, the reference model (the base with the adapter switched
off), checkpoints and the progress bar; this file prepares the pairs, the settings and the adapter's record.

The adapter directory holds PEFT's files (adapter_config.json, adapter_model.safetensors), the tokenizer and
`aigc-adapter.json` (its base model reference, the training data's fingerprint, the settings): it loads as
`model=DIR` or `adapter=DIR`. Checkpoints are kept under DIR/checkpoints while training, so the same command
resumes after a kill; they are removed once the adapter is written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelLoadError
from ..storage import write_json
from .pairs import TextPair, as_rows, fingerprint

log = logging.getLogger("aigc")
CHECKPOINTS = "checkpoints"
RUN_RECORD = "aigc-run.json"  # inside CHECKPOINTS: which data and settings the checkpoints belong to
INSTALL_HINT = "aigc tune needs TRL, PEFT and datasets: pip install 'aigc[tune]'."


@dataclass(frozen=True)
class Settings:
    """What a tuning run is: steps (or epochs when steps is None), seed, and DPO/LoRA's few knobs."""

    steps: int | None = None
    epochs: float = 1.0
    seed: int = 0
    learning_rate: float = 5e-4
    beta: float = 0.1  # DPO's temperature: how far the tuned model may move from the base
    rank: int = 8  # LoRA rank
    batch_size: int = 4
    max_length: int = 256  # tokens of prompt + answer; longer pairs are truncated
    save_every: int = 10  # steps between checkpoints

    def check(self) -> None:
        bounds = {
            "steps": (1, 100_000),
            "seed": (0, 2**32 - 1),
            "rank": (1, 256),
            "batch_size": (1, 512),
            "max_length": (8, 32768),
            "save_every": (1, 100_000),
        }
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if value is None and name == "steps":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(
                    f"--{name.replace('_', '-')}={value!r} must be a whole number in [{low}, {high}].", field=name
                )
        for name, most in (("epochs", 1000.0), ("learning_rate", 1.0), ("beta", 100.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value <= most:
                raise ConfigError(f"--{name.replace('_', '-')}={value!r} must be a number in (0, {most}].", field=name)


def require_tune_packages() -> None:
    """One line naming the extra when TRL, PEFT or datasets is missing (checked before any model loads)."""
    missing = [name for name in ("trl", "peft", "datasets") if not _importable(name)]
    if missing:
        raise ConfigError(f"{INSTALL_HINT} (missing: {', '.join(missing)})")


def _importable(name: str) -> bool:
    """Whether a package is installed, without importing it (TRL takes seconds to import)."""
    import importlib.util
    import sys

    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def tune_text(
    pairs: list[TextPair],
    model: str,
    out: str | os.PathLike,
    settings: Settings = Settings(),
    *,
    data: dict[str, Any] | None = None,
    fresh: bool = False,
    progress: bool = True,
) -> Path:
    """Train a LoRA adapter of `model` on `pairs` with DPO and write it to `out`; returns `out`.

    Re-running with the same pairs and settings resumes from the last checkpoint; `fresh` starts over.
    `data` describes where the pairs came from, for the adapter's record.
    """
    settings.check()
    out = Path(out).expanduser()
    base = _checked_base(model)
    require_tune_packages()
    if not pairs:
        raise ConfigError(
            "no preference pairs to train on: rate some texts first (`aigc rate FILE --up/--down`, "
            "`aigc rate --prefer A B`) or pass --candidates DIR of a best_of run.",
            field="from",
        )
    data = {**(data or {}), "pairs": len(pairs), "fingerprint": fingerprint(pairs)}
    checkpoints, resume = _prepare(out, model, settings, data, fresh)
    if resume is not None:
        log.warning("aigc: resuming from %s (pass --fresh to start over)", resume)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5's renames, said on every step
        trainer = _trainer(model, pairs, settings, checkpoints, progress)
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    record = {
        "base_model": model,
        "base_resolved": str(base),
        "method": "dpo-lora",
        "data": data,
        "settings": asdict(settings),
        "steps_trained": trainer.state.global_step,
        "resumed_from": resume.name if resume else None,
        "versions": _versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_adapter(trainer, out, record)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return out


def _checked_base(model: str) -> str:
    """The base model reference resolved and checked as a causal LM (not an adapter), before anything loads."""
    from ..runtime import models, registry

    source = models.resolve(model)
    adapter = models.adapter_of(source)
    if adapter is not None:
        raise ConfigError(
            f"--model {model!r} is an adapter; tune a base model (its base is {adapter.base!r}).",
            field="model",
        )
    registry.check_model(registry.get("text", "lm"), model)
    return source.load_target


def _prepare(out: Path, model: str, settings: Settings, data: dict[str, Any], fresh: bool) -> tuple[Path, Path | None]:
    """The checkpoint folder, and the checkpoint to resume from when one of this very run is there."""
    from ..runtime.models import ADAPTER_CONFIG
    from ..storage import writable_dir

    if (out / ADAPTER_CONFIG).exists() and not fresh:
        raise ConfigError(
            f"--out {out} holds a finished adapter already; pass another --out, or --fresh to replace it.", field="out"
        )
    checkpoints = writable_dir(out / CHECKPOINTS, "--out")
    run = {"model": model, "fingerprint": data["fingerprint"], "settings": asdict(settings)}
    previous = _read_json(checkpoints / RUN_RECORD)
    found = sorted(
        checkpoints.glob("checkpoint-*"),
        key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else -1,
    )
    if previous is not None and previous != run and found and not fresh:
        raise ConfigError(
            f"--out {out} holds checkpoints of a run on other data or settings; pass --fresh to start "
            "over, or another --out.",
            field="out",
        )
    if fresh or previous != run:
        shutil.rmtree(checkpoints, ignore_errors=True)
        checkpoints = writable_dir(checkpoints, "--out")
        found = []
    write_json(checkpoints / RUN_RECORD, run)
    complete = [p for p in found if (p / "trainer_state.json").is_file()]
    return checkpoints, complete[-1] if complete else None


def _trainer(model: str, pairs: list[TextPair], settings: Settings, checkpoints: Path, progress: bool) -> Any:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    loaded = _load_base(model)
    tokenizer = loaded.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    chat = getattr(tokenizer, "chat_template", None) is not None
    config = DPOConfig(
        output_dir=str(checkpoints),
        max_steps=settings.steps or -1,
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        beta=settings.beta,
        max_length=settings.max_length,
        seed=settings.seed,
        data_seed=settings.seed,
        save_strategy="steps",
        save_steps=settings.save_every,
        save_total_limit=1,
        logging_steps=max(1, settings.save_every),
        report_to=[],
        disable_tqdm=not progress,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        use_cpu=not _has_cuda(),
    )
    lora = LoraConfig(
        r=settings.rank,
        lora_alpha=2 * settings.rank,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    dataset = Dataset.from_list(as_rows(pairs, chat))
    return DPOTrainer(
        model=loaded.model.train(), args=config, train_dataset=dataset, processing_class=tokenizer, peft_config=lora
    )


def _load_base(model: str) -> Any:
    """The base through the text generator's own loading (GGUF conversion cache, tokenizer pack), on the CPU in
    float32: trainable weights, never the packed 4-bit linears a CPU decodes with (quantize.py)."""
    from ..generators.text.causal_lm import CausalLMGenerator
    from ..runtime.devices import DeviceManager

    generator = CausalLMGenerator(model, DeviceManager("cpu", "float32"), backend="lm")
    return generator.load()


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _write_adapter(trainer: Any, out: Path, record: dict[str, Any]) -> None:
    """PEFT's files, the tokenizer and the record, moved into `out` with adapter_config.json last: a directory
    is an adapter only once all of it is there."""
    from ..runtime.models import ADAPTER_CONFIG, ADAPTER_RECORD

    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=out))
    try:
        trainer.model.save_pretrained(str(partial), safe_serialization=True)
        trainer.processing_class.save_pretrained(str(partial))
        write_json(partial / ADAPTER_RECORD, record)
        if not (partial / "adapter_model.safetensors").is_file():
            raise ModelLoadError("PEFT did not write adapter_model.safetensors; nothing was saved.")
        (partial / "README.md").unlink(missing_ok=True)  # PEFT's model-card stub says nothing the record does not
        names = sorted(p.name for p in partial.iterdir() if p.name != ADAPTER_CONFIG) + [ADAPTER_CONFIG]
        mode = _umask_mode()
        for name in names:
            os.chmod(partial / name, mode)  # what a plain open() would give: the folder may be shared
            os.replace(partial / name, out / name)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("aigc", "trl", "peft", "transformers", "torch")}
