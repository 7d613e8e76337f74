"""ferry-store: an example ferry protocol plugin."""
