"""The DCGAN helpers and the latent-space explorer of lesson 11 (without a browser): sampling,
scoring, the shipped generator, and what the explorer draws for each control."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from helpers import close
from matplotlib.figure import Figure

from cnn_lib import gan, models
from cnn_lib.widgets import LatentExplorer


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def classifier():
    return models.pretrained("lenet_small")


def test_to_pixels_and_back():
    pixels = np.array([0, 1, 127, 128, 254, 255], np.uint8)
    assert np.array_equal(gan.to_pixels(gan.to_tanh_range(pixels)), pixels)
    assert np.array_equal(gan.to_pixels(np.array([-3.0, 3.0])), [0, 255])     # clipped
    with pytest.raises(TypeError, match="uint8"):
        gan.to_tanh_range(np.zeros(3))


def test_sample_is_deterministic_and_keeps_the_mode():
    gen = gan.generator(latent=5, width=4, rng=0)
    assert gan.latent_size(gen) == 5
    gen.train()
    a = gan.sample(gen, 7, seed=3, batch_size=3)   # three batches; evaluation mode: no batch statistics
    assert a.shape == (7, 1, 28, 28) and a.dtype == np.float32 and np.all(np.abs(a) <= 1)
    assert gen.training                                  # restored
    close(a, gan.sample(gen, 7, seed=3), np.float32, "batches of 3 vs one batch")   # BLAS blocks differ
    np.testing.assert_array_equal(a, gan.sample(gen, 7, seed=3, batch_size=3))      # and runs repeat
    assert not np.array_equal(a, gan.sample(gen, 7, seed=4))


def test_score_of_real_digits_against_themselves(classifier):
    gen = gan.generator(latent=4, width=4, rng=0)
    real = (np.random.default_rng(0).random((50, 1, 28, 28)) * 255).astype(np.uint8)
    scores = gan.score(gen, 40, seed=0, real=real, classifier=classifier)
    assert set(scores) == {"n", "inception_score", "digit_shares", "real_inception_score", "frechet_distance"}
    assert 1.0 <= scores["inception_score"] <= 10.0 and np.isclose(sum(scores["digit_shares"]), 1.0)
    assert scores["frechet_distance"] > 0


def test_weight_average_follows_its_formula_and_copies_nothing():
    gen = gan.generator(latent=3, width=2, rng=0)
    average = gan.WeightAverage(gen, decay=0.5)
    start = {k: v.copy() for k, v in gen.params.items()}
    assert all(np.array_equal(average.averaged.params[k], v) for k, v in start.items())
    for t in (1, 2, 3):
        for value in gen.params.values():
            value += 1.0                                   # the "training step"
        before = {k: v.copy() for k, v in average.averaged.params.items()}
        average.update()
        d = min(0.5, (1 + t) / (10 + t))
        for k, value in gen.params.items():
            np.testing.assert_allclose(average.averaged.params[k], d * before[k] + (1 - d) * value, rtol=1e-6)
    assert all(not np.shares_memory(average.averaged.params[k], v) for k, v in gen.params.items())
    with pytest.raises(ValueError, match="decay"):
        gan.WeightAverage(gen, decay=1.0)


@pytest.mark.parametrize("refine", [0, 1, 2])
def test_a_deeper_generator_keeps_its_output_and_is_read_back_from_its_weights(tmp_path, refine):
    """``refine`` adds stride-1 transposed convolutions (with batch norm and ReLU) at 14x14: the same
    (1, 28, 28) images, and shape_of finds (latent, width, refine) again in the saved weights, for
    loading them (gan.pretrained) and for a weight average of the same shape."""
    gen = gan.generator(latent=5, width=3, rng=0, refine=refine)
    assert len(gen.layers) == 9 + 3 * refine
    added = [layer.name for layer in gen.layers[7:7 + 3 * refine]]
    assert added == ["ConvTranspose2d", "BatchNorm2d", "ReLU"] * refine
    assert gen.forward(np.zeros((2, 5), np.float32)).shape == (2, 1, 28, 28)
    gen.save(tmp_path / "g.npz")
    with np.load(tmp_path / "g.npz") as saved:
        assert gan.shape_of(saved) == (5, 3, refine)
    assert gan.shape_of(gen.state_dict()) == (5, 3, refine)
    average = gan.WeightAverage(gen, decay=0.9)
    assert sorted(average.averaged.params) == sorted(gen.params)
    with pytest.raises(ValueError, match="refine"):
        gan.generator(latent=5, width=3, refine=-1)


def test_refresh_batch_norm_averages_the_batches_statistics():
    gen = gan.generator(latent=4, width=2, rng=0)
    gen.layers[2].buffers["running_mean"][...] = 99.0           # stale statistics, to be replaced
    gen.eval()
    gan.refresh_batch_norm(gen, seed=5, n=30, batch_size=10)
    assert not gen.training and gen.layers[2].momentum == 0.1    # mode and momentum restored
    z = np.random.default_rng(5).standard_normal((30, 4)).astype(np.float32)
    h = gen.layers[1].forward(gen.layers[0].forward(z)).astype(np.float64)   # the first batch norm's input
    batches = h.reshape(3, 10, *h.shape[1:])
    means = batches.mean(axis=(1, 3, 4))                        # (3 batches, C)
    variances = batches.var(axis=(1, 3, 4), ddof=1)             # unbiased, PyTorch's convention
    np.testing.assert_allclose(gen.layers[2].buffers["running_mean"], means.mean(axis=0), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(gen.layers[2].buffers["running_var"], variances.mean(axis=0), rtol=1e-5)


def test_label_smoothing_changes_only_the_real_halfs_target():
    from cnn_lib import Adam, BCEWithLogits

    def one_step(real_label):
        rng = np.random.default_rng(3)
        g, d = gan.generator(4, 2, rng=rng, dtype=np.float64), gan.discriminator(2, rng=rng, dtype=np.float64)
        opt_g, opt_d = Adam(g.parameters(), lr=1e-3), Adam(d.parameters(), lr=1e-3)
        real = np.random.default_rng(4).uniform(-1, 1, (6, 1, 28, 28))
        z = np.random.default_rng(5).standard_normal((6, 4))
        return g, d, gan.train_step(g, d, opt_g, opt_d, real, z, real_label=real_label), real, z

    _, _, (d_plain, g_plain), real, z = one_step(1.0)
    g, d, (d_smooth, g_smooth), _, _ = one_step(0.9)
    # D's real half: BCE against 0.9 instead of 1, of the same logits (the first forward of the step)
    rng = np.random.default_rng(3)
    g0, d0 = gan.generator(4, 2, rng=rng, dtype=np.float64), gan.discriminator(2, rng=rng, dtype=np.float64)
    logits = d0.forward(real)
    fake_half = BCEWithLogits().forward(d0.forward(g0.forward(z)), np.zeros((6, 1)))
    assert d_smooth == pytest.approx(BCEWithLogits().forward(logits, np.full((6, 1), 0.9)) + fake_half)
    assert d_plain == pytest.approx(BCEWithLogits().forward(logits, np.ones((6, 1))) + fake_half)
    # the generator's half keeps the target 1: the targets of the step's three losses, in order
    class Recording(BCEWithLogits):
        targets = []

        def forward(self, logits, target):
            self.targets.append(np.array(target))
            return super().forward(logits, target)

    recording = Recording()
    opt_g, opt_d = Adam(g.parameters()), Adam(d.parameters())
    gan.train_step(g, d, opt_g, opt_d, real, z, loss_fn=recording, real_label=0.9)
    assert [np.unique(t).tolist() for t in recording.targets] == [[0.9], [0.0], [1.0]]
    with pytest.raises(ValueError, match="real_label"):
        gan.train_step(g, d, None, None, real, z, real_label=0.0)


def test_the_shipped_generator_draws_every_digit(classifier):
    gen = gan.pretrained()
    assert not gen.training
    scores = gan.score(gen, 2000, seed=11, classifier=classifier)
    # cnn_lib/assets/README.md: 8.03 on 10,000 digits, every digit >= 8.4%; 2,000 fresh ones land close
    assert scores["inception_score"] > 7.3, scores
    assert min(scores["digit_shares"]) > 0.05, scores


def test_latent_explorer_draws_the_walk(classifier):
    gen = gan.generator(latent=6, width=4, rng=0)
    explorer = LatentExplorer(gen, classifier, seed=1, dims=(0, 5), steps=5)
    fig = explorer.draw(t=0.0)
    assert isinstance(fig, Figure)
    np.testing.assert_allclose(explorer.last["z"], explorer.z_a)
    explorer.draw(t=1.0, offsets=[2.0, -1.0])
    expected = explorer.z_b.copy()
    expected[[0, 5]] += [2.0, -1.0]
    np.testing.assert_allclose(explorer.last["z"], expected)
    assert explorer.last["probs"].shape == (10,) and np.isclose(explorer.last["probs"].sum(), 1.0)
    # the image drawn is the generator's for that z, in evaluation mode
    np.testing.assert_allclose(explorer.last["image"], explorer.images(expected[None])[0], atol=1e-6)
    with pytest.raises(ValueError, match="2 offsets"):
        explorer.draw(t=0.5, offsets=[1.0])
    with pytest.raises(ValueError, match="latent indices"):
        LatentExplorer(gen, dims=(6,))


def test_latent_explorer_widget_callbacks(classifier):
    explorer = LatentExplorer(gan.generator(latent=6, width=4, rng=0), classifier, seed=2, dims=(1,))
    box = explorer.widget()
    assert box is not None and explorer.last["t"] == 0.0
    explorer.controls["t"].value = 0.5
    assert explorer.last["t"] == 0.5 and "classifier reads" in explorer.readout.value
    explorer.controls[1].value = 1.5
    assert explorer.last["offsets"][0] == 1.5
    z_a = explorer.z_a.copy()
    explorer.controls["new pair"].click()
    assert not np.allclose(explorer.z_a, z_a)
    np.testing.assert_allclose(explorer.last["z"], explorer.latent_vector(0.5, [1.5]))
    # without a classifier there is no readout of digits, and no error
    plain = LatentExplorer(gan.generator(latent=6, width=4, rng=0), None)
    plain.draw(t=0.3)
    assert "digit" not in plain.last
