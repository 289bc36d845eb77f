"""ipywidgets explorers: conv_forward."""
