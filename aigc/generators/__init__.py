"""Generators: the template every backend follows (base.py) and the knobs it declares (knobs.py), then one folder
per kind (text/, image/, audio/) with each backend and the device code it runs; a backend is handed its model
reference and the device manager. Plug-ins subclass aigc.generators.base.Generator."""
