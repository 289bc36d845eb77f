"""PyTorch autograd as an independent oracle: same inputs, same weights, same numbers.

torch is a test-only tool here (never a dependency of the course). Without it these tests
skip; CI installs the CPU build (`pip install torch==2.13.0`) so they run there.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import conv_configs, pool_configs
from hypothesis import given, settings

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed: `pip install torch==2.13.0` to run the oracle tests")
tnn = torch.nn.functional

from cnn_lib import (  # noqa: E402
    SGD,
    Adam,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    BCEWithLogits,
    Conv2d,
    ConvTranspose2d,
    Flatten,
    LeakyReLU,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    SoftmaxCrossEntropy,
    Tanh,
    Unflatten,
)

torch.set_default_dtype(torch.float64)


def t(a, grad=True):
    return torch.tensor(np.ascontiguousarray(a), dtype=torch.float64, requires_grad=grad)


def close(ours, theirs, tol=1e-10):
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=tol, atol=tol)


@settings(max_examples=40)
@given(conv_configs())
def test_conv2d_matches_torch(cfg):
    rng = np.random.default_rng(cfg["seed"])
    x = rng.standard_normal((cfg["n"], cfg["c_in"], cfg["h"], cfg["w"]))
    conv = Conv2d(cfg["c_in"], cfg["c_out"], cfg["kernel"], stride=cfg["stride"],
                  padding=cfg["padding"], bias=cfg["bias"], rng=cfg["seed"], dtype=np.float64)
    y = conv.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = conv.backward(dy)
    xt, wt = t(x), t(conv.params["weight"])
    bt = t(conv.params["bias"]) if cfg["bias"] else None
    yt = tnn.conv2d(xt, wt, bt, stride=cfg["stride"], padding=cfg["padding"])
    yt.backward(t(dy, grad=False))
    close(y, yt)
    close(dx, xt.grad)
    close(conv.grads["weight"], wt.grad)
    if cfg["bias"]:
        close(conv.grads["bias"], bt.grad)


@settings(max_examples=40)
@given(conv_configs(transpose=True))
def test_conv_transpose2d_matches_torch(cfg):
    rng = np.random.default_rng(cfg["seed"])
    x = rng.standard_normal((cfg["n"], cfg["c_in"], cfg["h"], cfg["w"]))
    layer = ConvTranspose2d(cfg["c_in"], cfg["c_out"], cfg["kernel"], stride=cfg["stride"],
                            padding=cfg["padding"], output_padding=cfg["output_padding"],
                            bias=cfg["bias"], rng=cfg["seed"], dtype=np.float64)
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    xt, wt = t(x), t(layer.params["weight"])
    bt = t(layer.params["bias"]) if cfg["bias"] else None
    yt = tnn.conv_transpose2d(xt, wt, bt, stride=cfg["stride"], padding=cfg["padding"],
                              output_padding=cfg["output_padding"])
    yt.backward(t(dy, grad=False))
    close(y, yt)
    close(dx, xt.grad)
    close(layer.grads["weight"], wt.grad)
    if cfg["bias"]:
        close(layer.grads["bias"], bt.grad)


@settings(max_examples=40)
@given(cfg=pool_configs())
def test_pooling_matches_torch(cfg):
    """Random normal inputs (no ties: torch's tie rule is its own) for max; any for average."""
    rng = np.random.default_rng(cfg["seed"])
    x = rng.standard_normal((cfg["n"], cfg["c"], cfg["h"], cfg["w"]))
    for ours, theirs in ((MaxPool2d, tnn.max_pool2d), (AvgPool2d, tnn.avg_pool2d)):
        pool = ours(cfg["kernel"], cfg["stride"])
        y = pool.forward(x)
        dy = rng.standard_normal(y.shape)
        xt = t(x)
        yt = theirs(xt, cfg["kernel"], cfg["stride"])
        yt.backward(t(dy, grad=False))
        close(y, yt)
        close(pool.backward(dy), xt.grad)


def test_losses_match_torch():
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((6, 10)) * 3, rng.integers(0, 10, 6)
    loss = SoftmaxCrossEntropy()
    value = loss.forward(logits, labels)
    zt = t(logits)
    lt = tnn.cross_entropy(zt, torch.tensor(labels))
    lt.backward()
    assert np.isclose(value, lt.item(), rtol=1e-12)
    close(loss.backward(), zt.grad)

    z, target = rng.standard_normal((4, 3)) * 5, rng.uniform(0, 1, (4, 3))
    bce = BCEWithLogits()
    value = bce.forward(z, target)
    zt = t(z)
    lt = tnn.binary_cross_entropy_with_logits(zt, t(target, grad=False))
    lt.backward()
    assert np.isclose(value, lt.item(), rtol=1e-12)
    close(bce.backward(), zt.grad)


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_training_steps_match_torch(opt_name):
    """Five steps of the same small CNN, loss and optimizer: identical weights after."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 1, 8, 8))
    y = rng.integers(0, 3, 4)
    ours = Sequential(Conv2d(1, 2, 3, padding=1, rng=0, dtype=np.float64), ReLU(), MaxPool2d(2),
                      Flatten(), Linear(32, 3, rng=1, dtype=np.float64))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(),
                                 torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32, 3))
    with torch.no_grad():
        for (_, ours_p), theirs_p in zip(ours.params.items(), theirs.parameters()):
            theirs_p.copy_(torch.from_numpy(ours_p))
    if opt_name == "sgd":
        opt = SGD(ours.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        topt = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    else:
        opt = Adam(ours.parameters(), lr=0.01, betas=(0.5, 0.999))
        topt = torch.optim.Adam(theirs.parameters(), lr=0.01, betas=(0.5, 0.999))
    loss_fn = SoftmaxCrossEntropy()
    for _ in range(5):
        opt.zero_grad()
        loss_fn.forward(ours.forward(x), y)
        ours.backward(loss_fn.backward())
        opt.step()
        topt.zero_grad()
        tnn.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        topt.step()
    for (name, ours_p), theirs_p in zip(ours.params.items(), theirs.parameters()):
        np.testing.assert_allclose(ours_p, theirs_p.detach().numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("shape", [(6, 4), (5, 3, 7), (4, 3, 5, 6)], ids=["bn1d", "bn1d (N,C,L)", "bn2d"])
@pytest.mark.parametrize("momentum", [0.1, 0.7])
def test_batchnorm_matches_torch_over_several_steps(shape, momentum):
    """Outputs, every gradient and the running statistics after four training steps, then
    evaluation mode, against torch.nn.BatchNorm1d/2d with the same weights."""
    rng = np.random.default_rng(0)
    ours = (BatchNorm2d if len(shape) == 4 else BatchNorm1d)(shape[1], momentum=momentum, dtype=np.float64)
    theirs = (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d)(shape[1], momentum=momentum)
    gamma, beta = rng.uniform(0.5, 2, shape[1]), rng.standard_normal(shape[1])
    ours.params["weight"][...], ours.params["bias"][...] = gamma, beta
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(gamma))
        theirs.bias.copy_(torch.from_numpy(beta))
    for _ in range(4):
        x = rng.standard_normal(shape) * 3 + 1
        dy = rng.standard_normal(shape)
        ours.zero_grad()
        y = ours.forward(x)
        dx = ours.backward(dy)
        xt = t(x)
        theirs.zero_grad()
        yt = theirs(xt)
        yt.backward(t(dy, grad=False))
        close(y, yt)
        close(dx, xt.grad)
        close(ours.grads["weight"], theirs.weight.grad)
        close(ours.grads["bias"], theirs.bias.grad)
        close(ours.buffers["running_mean"], theirs.running_mean)
        close(ours.buffers["running_var"], theirs.running_var)
    ours.eval()
    theirs.eval()
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    xt = t(x)
    yt = theirs(xt)
    yt.backward(t(dy, grad=False))
    close(ours.forward(x), yt)
    close(ours.backward(dy), xt.grad)


def test_dcgan_shaped_generator_and_discriminator_match_torch():
    """A small generator (Linear, Unflatten, ConvTranspose2d + BatchNorm2d, Tanh) feeding a
    discriminator (strided Conv2d, LeakyReLU, Linear) and BCEWithLogits: the loss, the
    gradient that flows from D back into G's input, and G's weight gradients."""
    rng = np.random.default_rng(0)
    f64 = np.float64
    gen = Sequential(Linear(5, 4 * 4 * 4, rng=0, dtype=f64), Unflatten((4, 4, 4)), BatchNorm2d(4, dtype=f64),
                     ReLU(), ConvTranspose2d(4, 1, 4, stride=2, padding=1, rng=1, dtype=f64), Tanh())
    disc = Sequential(Conv2d(1, 3, 4, stride=2, padding=1, rng=2, dtype=f64), LeakyReLU(0.2), Flatten(),
                      Linear(3 * 4 * 4, 1, rng=3, dtype=f64))
    nn = torch.nn
    tgen = nn.Sequential(nn.Linear(5, 64), nn.Unflatten(1, (4, 4, 4)), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.ConvTranspose2d(4, 1, 4, 2, 1), nn.Tanh())
    tdisc = nn.Sequential(nn.Conv2d(1, 3, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(48, 1))
    with torch.no_grad():
        for ours, theirs in ((gen, tgen), (disc, tdisc)):
            for (_, p), tp in zip(ours.params.items(), theirs.parameters()):
                tp.copy_(torch.from_numpy(p))
    z = rng.standard_normal((6, 5))
    loss_fn = BCEWithLogits()
    fake = gen.forward(z)
    loss = loss_fn.forward(disc.forward(fake), np.ones((6, 1)))   # the generator's loss
    d_fake = disc.backward(loss_fn.backward())                     # dL/d(fake image): D -> G
    dz = gen.backward(d_fake)
    zt = t(z)
    fake_t = tgen(zt)
    fake_t.retain_grad()
    lt = tnn.binary_cross_entropy_with_logits(tdisc(fake_t), torch.ones(6, 1))
    lt.backward()
    assert np.isclose(loss, lt.item(), rtol=1e-12)
    close(fake, fake_t)
    close(d_fake, fake_t.grad)
    close(dz, zt.grad)
    for (name, g), tp in zip(gen.grads.items(), tgen.parameters()):
        np.testing.assert_allclose(g, tp.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_dcgan_training_steps_match_torch():
    """Two full DCGAN steps (discriminator on a real and a fake batch, then the generator
    through the discriminator), Adam on both: the same weights and running statistics as
    PyTorch's standard DCGAN loop."""
    from cnn_lib import Adam, gan

    f64 = np.float64
    gen = gan.generator(latent=6, width=4, rng=0, dtype=f64)
    disc = gan.discriminator(width=4, rng=1, dtype=f64)
    nn = torch.nn
    tgen = nn.Sequential(nn.Linear(6, 8 * 49, bias=False), nn.Unflatten(1, (8, 7, 7)), nn.BatchNorm2d(8),
                         nn.ReLU(), nn.ConvTranspose2d(8, 4, 4, 2, 1, bias=False), nn.BatchNorm2d(4),
                         nn.ReLU(), nn.ConvTranspose2d(4, 1, 4, 2, 1), nn.Tanh())
    tdisc = nn.Sequential(nn.Conv2d(1, 4, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(4, 8, 4, 2, 1, bias=False),
                          nn.BatchNorm2d(8), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(8 * 49, 1))
    with torch.no_grad():
        for ours, theirs in ((gen, tgen), (disc, tdisc)):
            for (_, p), tp in zip(ours.params.items(), theirs.parameters()):
                tp.copy_(torch.from_numpy(p))
    opt_g = Adam(gen.parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_d = Adam(disc.parameters(), lr=2e-3, betas=(0.5, 0.999))
    topt_g = torch.optim.Adam(tgen.parameters(), lr=2e-3, betas=(0.5, 0.999))
    topt_d = torch.optim.Adam(tdisc.parameters(), lr=2e-3, betas=(0.5, 0.999))
    bce = tnn.binary_cross_entropy_with_logits
    rng = np.random.default_rng(0)
    for _ in range(2):
        real, z = rng.uniform(-1, 1, (5, 1, 28, 28)), rng.standard_normal((5, 6))
        d_loss, g_loss = gan.train_step(gen, disc, opt_g, opt_d, real, z)
        fake = tgen(torch.from_numpy(z))
        topt_d.zero_grad()
        td = (bce(tdisc(torch.from_numpy(real)), torch.ones(5, 1))
              + bce(tdisc(fake.detach()), torch.zeros(5, 1)))
        td.backward()
        topt_d.step()
        topt_g.zero_grad()
        tg = bce(tdisc(fake), torch.ones(5, 1))
        tg.backward()
        topt_g.step()
        assert d_loss == pytest.approx(td.item(), rel=1e-10) and g_loss == pytest.approx(tg.item(), rel=1e-10)
    for ours, theirs in ((gen, tgen), (disc, tdisc)):
        for (name, p), tp in zip(ours.params.items(), theirs.parameters()):
            np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-8, atol=1e-10, err_msg=name)
        tb = [b for b in theirs.buffers() if b.dtype == torch.float64]
        for (name, b), tbuf in zip(ours.buffers.items(), tb):
            np.testing.assert_allclose(b, tbuf.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
