"""The `aigc` command line: the click group and its commands (main.py), its knob options built from the
backends' declarations (knobs.py), rating and tuning commands (rate.py, tune.py). `aigc --help` never imports torch."""

from .main import cli, main

__all__ = ["cli", "main"]
