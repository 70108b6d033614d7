"""Work made of many generate calls: chained workflows and their YAML recipes, resumable asset
batches, and the pages they leave behind (a batch's gallery, a run's report)."""
