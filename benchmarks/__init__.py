"""Side-by-side timings: the stock library call users would write vs aigc's path, in one process."""
