"""Generators: one file per backend, each handed its model reference and the device manager."""
