"""ipywidgets explorers: a generator's latent space (lesson 11).

:class:`LatentExplorer` walks between two noise vectors ``z_a`` and ``z_b`` of a trained
generator, ``z = (1 - t) z_a + t z_b``, moves a few chosen latent numbers on top of that, and
shows the image, the walk as a strip of images, and what the course's classifier reads.

    explorer = LatentExplorer(gan.pretrained(), models.pretrained("lenet_small"))
    explorer.widget()                              # interactive (in Jupyter)
    explorer.draw(t=0.5, offsets=(1.0, 0, 0))      # one static figure
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..data import normalize
from ..layers import as_generator

__all__ = ["LatentExplorer"]


class LatentExplorer:
    """Walk a generator's latent space.

    gen: a generator (``cnn_lib.gan.generator``), used in evaluation mode;
    classifier: a digit classifier for ``(N, 1, 28, 28)`` inputs normalised with "standard"
        (``models.pretrained("lenet_small")``), or None for no readout;
    seed: draws the pair ``z_a``, ``z_b`` (:meth:`new_pair` draws the next pair);
    dims: the latent numbers that get a slider of their own; steps: images in the strip.

    After each :meth:`draw`, ``self.last`` holds what was drawn: ``t``, ``offsets``, ``z``
    (latent,), ``image`` (28, 28) in [-1, 1], and, with a classifier, ``probs`` (10,) and
    ``digit``.
    """

    offset_range = 3.0

    def __init__(self, gen, classifier=None, seed=0, dims=(0, 1, 2), steps: int = 9):
        self.gen = gen
        self.classifier = classifier
        self.latent = int(gen.layers[0].params["weight"].shape[1])
        self.dims = tuple(int(d) for d in dims)
        if any(not 0 <= d < self.latent for d in self.dims):
            raise ValueError(f"dims must be latent indices in [0, {self.latent}), got {dims}")
        if steps < 2:
            raise ValueError(f"steps must be at least 2, got {steps}")
        self.steps = int(steps)
        self.rng = as_generator(seed)
        self.last = None
        self.controls = {}
        self.output = None
        self.readout = None
        self.new_pair()

    def new_pair(self):
        """Draw the next two noise vectors ``z_a``, ``z_b`` from the explorer's generator."""
        self.z_a, self.z_b = self.rng.standard_normal((2, self.latent))

    def latent_vector(self, t=0.0, offsets=None) -> np.ndarray:
        """``(1 - t) z_a + t z_b``, plus ``offsets`` added to the latent numbers ``dims``."""
        z = (1.0 - t) * self.z_a + t * self.z_b
        if offsets is not None:
            offsets = np.asarray(offsets, dtype=np.float64)
            if offsets.shape != (len(self.dims),):
                raise ValueError(f"expected {len(self.dims)} offsets (one per dim {self.dims}), "
                                 f"got shape {offsets.shape}")
            z = z.copy()
            z[list(self.dims)] += offsets
        return z

    def images(self, zs) -> np.ndarray:
        """The generator's images ``(N, 28, 28)`` for latent vectors ``zs`` ``(N, latent)``."""
        dtype = self.gen.layers[0].params["weight"].dtype
        was_training = self.gen.training
        self.gen.eval()
        try:
            return self.gen.forward(np.asarray(zs, dtype=dtype))[:, 0]
        finally:
            self.gen.train(was_training)

    def probabilities(self, images) -> np.ndarray:
        """The classifier's probabilities ``(N, 10)`` for generator images ``(N, 28, 28)``."""
        pixels = np.clip(np.round((np.asarray(images, np.float64) + 1) * 127.5), 0, 255).astype(np.uint8)
        logits = np.asarray(self.classifier.forward(normalize(pixels[:, None], "standard")), np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def draw(self, t=0.0, offsets=None):
        """One figure: the image at ``t`` (with ``offsets``), the walk from ``z_a`` to ``z_b``
        with ``t`` marked, and the classifier's probabilities. Returns the Figure."""
        offsets = np.zeros(len(self.dims)) if offsets is None else np.asarray(offsets, np.float64)
        z = self.latent_vector(t, offsets)
        ts = np.linspace(0.0, 1.0, self.steps)
        walk = self.images([self.latent_vector(s, offsets) for s in ts] + [z])
        image, strip = walk[-1], walk[:-1]
        self.last = {"t": float(t), "offsets": offsets.copy(), "z": z, "image": image}

        with_probs = self.classifier is not None
        fig = plt.figure(figsize=(10, 3.4))
        ratios = [1, 2.4, 1.3] if with_probs else [1, 2.4]
        grid = fig.add_gridspec(2, len(ratios), width_ratios=ratios, height_ratios=[3, 1])
        ax = fig.add_subplot(grid[:, 0])
        ax.imshow(image, cmap="gray", vmin=-1, vmax=1)
        ax.set_title(f"t = {t:.2f}")
        ax.axis("off")
        ax = fig.add_subplot(grid[0, 1])
        ax.imshow(np.concatenate(list(strip), axis=1), cmap="gray", vmin=-1, vmax=1)
        ax.axvline((t * (self.steps - 1) + 0.5) * 28 - 0.5, color="tab:orange", lw=2)
        ax.set_title(f"z_a  ->  z_b in {self.steps} steps (orange: t)")
        ax.axis("off")
        ax = fig.add_subplot(grid[1, 1])
        ax.bar(range(self.latent), z, color="0.6")
        ax.bar(list(self.dims), z[list(self.dims)], color="tab:orange")
        ax.set_xlim(-1, self.latent)
        ax.set_ylabel("z")
        ax.set_xlabel("latent number (orange: the sliders')")
        if with_probs:
            probs = self.probabilities(image[None])[0]
            self.last.update(probs=probs, digit=int(probs.argmax()))
            ax = fig.add_subplot(grid[:, 2])
            bars = ax.bar(range(10), probs, color="0.6")
            bars[int(probs.argmax())].set_color("tab:blue")
            ax.set(xticks=range(10), ylim=(0, 1), title=f"classifier: {probs.argmax()} ({probs.max():.0%})")
        fig.tight_layout()
        return fig

    def widget(self):
        """An ipywidgets box: a slider for ``t``, one per latent number in ``dims``, a button
        for a new pair, and a readout of what the classifier sees."""
        import ipywidgets as W
        from IPython.display import display

        style = {"description_width": "initial"}
        layout = W.Layout(width="320px")
        c = {"t": W.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.05, description="t (z_a -> z_b)",
                                style=style, layout=layout)}
        for d in self.dims:
            c[d] = W.FloatSlider(value=0.0, min=-self.offset_range, max=self.offset_range, step=0.25,
                                 description=f"+ on z[{d}]", style=style, layout=layout)
        new = W.Button(description="new pair z_a, z_b")
        self.controls = {**c, "new pair": new}
        self.output = W.Output()
        self.readout = W.HTML()

        def redraw(_=None):
            with self.output:
                self.output.clear_output(wait=True)
                fig = self.draw(c["t"].value, [c[d].value for d in self.dims])
                display(fig)
                plt.close(fig)
            text = f"t = {self.last['t']:.2f}"
            if "digit" in self.last:
                probability = self.last["probs"].max()
                text += f": the classifier reads a <b>{self.last['digit']}</b> ({probability:.0%})"
            self.readout.value = text

        def next_pair(_):
            self.new_pair()
            redraw()

        for control in c.values():
            control.observe(redraw, names="value")
        new.on_click(next_pair)
        redraw()
        return W.VBox([W.HBox([c["t"], new]), W.HBox([c[d] for d in self.dims]), self.readout, self.output])
