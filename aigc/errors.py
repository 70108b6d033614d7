"""One error family: every failure a user can act on is an AIGCError whose message says what to change."""

from __future__ import annotations


class AIGCError(Exception):
    """Root of every error aigc raises on purpose."""


class ConfigError(AIGCError, ValueError):
    """A request is malformed: bad prompt, parameter, seed, size...

    Raised before any model loads; the few checks that need the model itself (a prompt longer than the
    model's context, say) say so in their message. `field` names the argument or knob at fault, when one is,
    so a front end can point at it (a recipe's line, a form field).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NoMetadataError(ConfigError):
    """A file aigc can read holds no aigc record (it was made elsewhere): its data is there, its provenance is not."""


class BackendNotFoundError(AIGCError, LookupError):
    """No generator is registered for the requested kind or backend."""


class ModelLoadError(AIGCError):
    """A model reference could not be resolved or its weights could not be loaded."""


class DeviceError(AIGCError):
    """The requested device or dtype is not available here."""


class StorageError(AIGCError):
    """A file could not be read or written: a full disk, a read-only folder, missing permissions.

    What was written before stays valid (every write is atomic), so the same command resumes once fixed.
    """


class GenerationError(AIGCError):
    """Generation failed after the model loaded (out of memory at batch size 1, numerical failure...)."""


def one_of(values, quote: bool = True) -> str:
    """Render allowed values for an error message: 'a', 'b' or 'c' (without quotes: .a, .b or .c)."""
    items = [repr(v) if quote else str(v) for v in values]
    if not items:
        return "(none)"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " or " + items[-1]
