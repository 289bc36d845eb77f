"""ipywidgets explorers: pooling."""
