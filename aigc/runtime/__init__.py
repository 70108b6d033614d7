"""Where models come from and where they run: model references (models.py), the backend registry
(registry.py), the shared device manager and its cache (devices.py), and what is installed (inventory.py)."""
