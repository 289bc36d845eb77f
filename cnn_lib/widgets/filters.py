"""ipywidgets explorers of a trained network (lesson 07): its filters, and how they changed
over training; its feature maps for any test image, layer and channel.

    snapshots = Snapshots("0.weight")                  # a callback: the weights after every epoch
    fit(model, ..., callbacks=[snapshots])
    FilterExplorer(snapshots).widget()                 # a slider over the epochs
    ActivationExplorer(model, x_test).widget()         # image, layer and channel
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..layers import Conv2d, Flatten, Linear
from ..training import Callback
from ..viz.filters import plot_feature_maps, plot_filters

__all__ = ["ActivationExplorer", "FilterExplorer", "Snapshots"]


class Snapshots(Callback):
    """Keep a copy of one parameter (``"0.weight"``: the first conv's kernels) before training
    and after every epoch: ``snapshots.labels[i]`` and ``snapshots.values[i]``."""

    def __init__(self, key: str = "0.weight"):
        self.key, self.labels, self.values = key, [], []

    def _take(self, run, label):
        params = run.model.params
        if self.key not in params:
            raise KeyError(f"Snapshots: the model has no parameter {self.key!r}; it has {sorted(params)}")
        self.labels.append(label)
        self.values.append(params[self.key].copy())

    def on_train_begin(self, run):
        self.labels, self.values = [], []
        self._take(run, "before training")

    def on_epoch_end(self, run):
        self._take(run, f"after epoch {run.epoch}")


class FilterExplorer:
    """The kernels of a conv layer, at each saved moment of training (a :class:`Snapshots`
    or a list of ``(label, weight)`` pairs), all on one colour scale, with how far each moved
    since the start."""

    def __init__(self, snapshots):
        if isinstance(snapshots, Snapshots):
            snapshots = list(zip(snapshots.labels, snapshots.values))
        if not snapshots:
            raise ValueError("FilterExplorer: no snapshots (was the Snapshots callback given to fit?)")
        self.labels = [label for label, _ in snapshots]
        self.weights = [np.asarray(w) for _, w in snapshots]
        if any(w.ndim != 4 for w in self.weights):
            raise ValueError("FilterExplorer: expected conv weights of shape (C_out, C_in, kH, kW)")
        self.vmax = max(float(np.abs(w[:, 0]).max()) for w in self.weights)
        self.last = None
        self.output = None

    def moved(self, index) -> np.ndarray:
        """How far each filter moved from its start: ||W_i(now) - W_i(start)|| / ||W_i(start)||."""
        start, now = self.weights[0], self.weights[index]
        axes = tuple(range(1, start.ndim))
        return np.sqrt(((now - start) ** 2).sum(axis=axes)) / np.sqrt((start**2).sum(axis=axes))

    def draw(self, index=-1):
        index = range(len(self.weights))[index]  # accepts -1; an IndexError names a bad index
        moved = self.moved(index)
        fig = plot_filters(self.weights[index], vmax=self.vmax,
                           title=f"{self.labels[index]}: filters moved {moved.mean():.0%} on average "
                                 "from their start")
        self.last = {"index": index, "label": self.labels[index], "moved": moved}
        return fig

    def widget(self):
        import ipywidgets as w
        from IPython.display import display

        self.output = w.Output()
        slider = w.SelectionSlider(options=[(label, i) for i, label in enumerate(self.labels)],
                                   value=len(self.labels) - 1, description="when",
                                   layout=w.Layout(width="420px"))

        def show(index):
            with self.output:
                self.output.clear_output(wait=True)
                fig = self.draw(index)
                display(fig)
                plt.close(fig)

        slider.observe(lambda change: show(change["new"]), names="value")
        self.controls = {"when": slider}
        show(slider.value)
        return w.VBox([slider, self.output])


class ActivationExplorer:
    """For a test image, a conv layer and a channel: the image and that channel's feature
    maps after the convolution and after each layer that follows it (ReLU, pooling) up to
    the next conv or the Flatten.

    model:  a Sequential of the course's layers
    images: (N, 1, H, W) inputs; ``labels`` (N,) optional, shown in the title
    """

    def __init__(self, model, images, labels=None):
        self.model, self.images = model, np.asarray(images)
        self.labels = None if labels is None else np.asarray(labels)
        self.convs = [i for i, layer in enumerate(model.layers) if isinstance(layer, Conv2d)]
        if not self.convs:
            raise ValueError("ActivationExplorer: the model has no Conv2d layer")
        if self.images.ndim != 4:
            raise ValueError(f"ActivationExplorer: expected images (N, C, H, W), got {self.images.shape}")
        self.last = None
        self.output = None

    def stages(self, image: int, layer: int) -> dict:
        """``{name: (C, H', W')}``: the outputs of conv layer ``layer`` (an index into
        ``model.layers``) and of the layers after it, up to the next conv or Flatten."""
        if layer not in self.convs:
            raise ValueError(f"layer must be the index of a Conv2d, one of {self.convs}, got {layer}")
        x = self.images[image : image + 1]
        stages = {}
        for i, module in enumerate(self.model.layers):
            if i > layer and isinstance(module, (Conv2d, Flatten, Linear)):
                break
            x = module.forward(x)  # layer by layer: nothing is fused, every output is there
            if i >= layer:
                stages[f"{i}: {module.name}"] = x[0]
        return stages

    def draw(self, image=0, layer=None, channel=0):
        layer = self.convs[0] if layer is None else layer
        stages = self.stages(image, layer)
        n_channels = next(iter(stages.values())).shape[0]
        if not 0 <= channel < n_channels:
            raise ValueError(f"channel must be in 0..{n_channels - 1}, got {channel}")
        said = "" if self.labels is None else f"digit {self.labels[image]}, "
        fig = plot_feature_maps(self.images[image, 0], stages, channel,
                                title=f"image {image} ({said}layer {layer}), channel {channel}")
        self.last = {"image": image, "layer": layer, "channel": channel, "stages": stages}
        return fig

    def widget(self):
        import ipywidgets as w
        from IPython.display import display

        self.output = w.Output()
        image = w.IntSlider(0, 0, len(self.images) - 1, description="image")
        layer = w.Dropdown(options=[(f"{i}: {self.model.layers[i]!r}"[:60], i) for i in self.convs],
                           value=self.convs[0], description="layer")
        channel = w.IntSlider(0, 0, self.model.layers[self.convs[0]].out_channels - 1, description="channel")

        def show(_=None):
            channel.max = self.model.layers[layer.value].out_channels - 1
            with self.output:
                self.output.clear_output(wait=True)
                fig = self.draw(image.value, layer.value, channel.value)
                display(fig)
                plt.close(fig)

        for control in (image, layer, channel):
            control.observe(show, names="value")
        self.controls = {"image": image, "layer": layer, "channel": channel}
        show()
        return w.VBox([w.HBox([image, channel]), layer, self.output])
