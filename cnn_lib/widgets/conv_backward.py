"""ipywidgets explorers: conv_backward."""
