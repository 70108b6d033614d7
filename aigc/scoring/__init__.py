"""The creativity scorer: embedders, quality measures, the combined score, and the feedback loop."""
