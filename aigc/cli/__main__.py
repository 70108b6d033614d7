"""`python -m aigc.cli`: the same command line as `aigc`."""

from .main import main

main()
