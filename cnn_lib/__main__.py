"""The command line: train a course network, or evaluate saved weights.

    python -m cnn_lib train --model lenet --data full --epochs 2
    python -m cnn_lib train --tutorial-setting --data full --seeds 0,1,2
    python -m cnn_lib evaluate runs/lenet/weights.npz --model lenet --data full

(``cnn-lib`` is the same command, installed as a console script.) ``train`` writes, into
``--out``: ``weights.npz`` (load with ``model.load``), ``history.json`` and ``history.csv``
(per-epoch loss and accuracy; every step's loss in the JSON) and ``curves.png``. Ctrl-C stops
a run cleanly between two steps and keeps what was trained.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import numpy as np

from . import models
from .data import load_mnist, sample_indices
from .losses import SoftmaxCrossEntropy
from .optim import SGD, Adam
from .training import Checkpoint, OneCycle, ProgressBar, evaluate, fit

#: The tutorial's own setting (question.txt): one image at a time, its initialisation,
#: plain SGD at lr 0.005, 3 epochs on the first 1,000 training images, tested on the first
#: 1,000 test images, pixels scaled to [-0.5, 0.5].
TUTORIAL_SETTING = dict(model="tutorial", init="tutorial", batch_size=1, lr=0.005, momentum=0.0,
                        optimizer="sgd", epochs=3, train_size=1000, test_size=1000,
                        normalize="tutorial")


class CliError(Exception):
    """A problem the user can fix: printed as one line, exit status 2."""


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _decay(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1) (0: no averaging), got {text!r}")
    return value


def _seeds(text):
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 0,1,2, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("expected at least one seed")
    return seeds


def _add_data_options(p):
    p.add_argument("--data", choices=("sample", "full"), default="sample",
                   help="the 5,000-digit sample shipped with cnn_lib (default; offline), or full "
                        "MNIST (60,000 + 10,000: `python -m cnn_lib.data download` fetches it)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="folder with the four MNIST IDX files, for --data full (default: "
                        "$CNN_LIB_MNIST_DIR, else the folder the download fills)")
    p.add_argument("--normalize", choices=("tutorial", "unit", "standard"), default="tutorial",
                   help="pixels to x/255 - 0.5 (tutorial, default), x/255 (unit), or zero mean "
                        "and unit variance (standard)")
    p.add_argument("--test-size", type=_positive_int, metavar="N",
                   help="use only the first N test images")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m cnn_lib",
        description="Train a course network on MNIST, or evaluate saved weights.",
        epilog="Run 'python -m cnn_lib train --help' for the training options.")
    sub = top.add_subparsers(dest="command", required=True, metavar="{train,gan,evaluate}")

    t = sub.add_parser("train", help="train a network, save its weights, history and curves",
                       description="Train a network with mini-batch SGD (or Adam), showing a "
                                   "progress bar; save weights.npz, history.json, history.csv "
                                   "and curves.png into --out. Ctrl-C stops cleanly and saves "
                                   "what was trained.")
    t.add_argument("--model", choices=tuple(models.MODELS), default="tutorial",
                   help="tutorial: conv 8x3x3 -> pool -> linear 10 (default); lenet: two convs "
                        "(32, 64) with ReLU and pooling -> linear 128 -> linear 10; lenet_small: "
                        "the same with 16 and 32 channels")
    t.add_argument("--init", choices=("pytorch", "tutorial"), default="pytorch",
                   help="the tutorial model's starting weights: cnn_lib's default (pytorch), or "
                        "the tutorial's (filters randn/9, weights randn/1352, no conv bias)")
    _add_data_options(t)
    t.add_argument("--train-size", type=_positive_int, metavar="N",
                   help="use only the first N training images")
    t.add_argument("--holdout-sample", action="store_true",
                   help="with --data full: leave out the 5,000 training images that the shipped "
                        "sample holds, so that the sample stays unseen (how the weights shipped "
                        "with lesson 10 were trained)")
    t.add_argument("--epochs", type=_positive_int, default=1, help="passes over the training set (default 1)")
    t.add_argument("--batch-size", type=_positive_int, default=32, help="images per step (default 32)")
    t.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="default sgd")
    t.add_argument("--lr", type=_positive_float, default=0.05, help="learning rate (default 0.05)")
    t.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9; 0 for plain SGD)")
    t.add_argument("--weight-decay", type=float, default=0.0, metavar="WD",
                   help="weight decay: WD * w is added to every gradient (default 0)")
    t.add_argument("--schedule", choices=("constant", "onecycle"), default="constant",
                   help="the learning rate: constant (default), or onecycle: a linear warm-up to "
                        "--lr over the first 15%% of the steps, then a linear decay to 0")
    t.add_argument("--seeds", type=_seeds, default=[0], metavar="S[,S...]",
                   help="random seed(s) of the weights and the shuffling; several seeds train "
                        "several runs, each into its own --out/seed-S folder (default 0)")
    t.add_argument("--tutorial-setting", action="store_true",
                   help="the tutorial's own setting: model tutorial, init tutorial, batch 1, "
                        "lr 0.005, plain SGD, 3 epochs, the first 1,000 training and 1,000 test "
                        "images (other options given explicitly still win)")
    t.add_argument("--out", metavar="DIR", default=None,
                   help="where to save the results (default runs/<model>)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in a log file)")

    g = sub.add_parser("gan", help="train the DCGAN of lesson 11 and measure its digits",
                       description="Train cnn_lib.gan's generator and discriminator on MNIST digits "
                                   "(pixels scaled to [-1, 1]), Adam lr 2e-4, betas (0.5, 0.999), as in "
                                   "the DCGAN paper; save generator.npz (with --ema, the weight average), "
                                   "discriminator.npz, history.json and a grid of samples after every "
                                   "epoch into --out; then score --score-samples generated digits with "
                                   "the shipped classifier.")
    _add_data_options(g)
    g.add_argument("--train-size", type=_positive_int, metavar="N",
                   help="use only the first N training images")
    g.add_argument("--epochs", type=_positive_int, default=1, help="passes over the training set (default 1)")
    g.add_argument("--batch-size", type=_positive_int, default=64, help="real images per step (default 64)")
    g.add_argument("--lr", type=_positive_float, default=2e-4,
                   help="Adam learning rate of the generator, and of the discriminator unless "
                        "--lr-d is given (default 2e-4)")
    g.add_argument("--lr-d", type=_positive_float, metavar="LR",
                   help="the discriminator's Adam learning rate, when it should differ from the "
                        "generator's (two time-scale updates, Heusel et al. 2017; default: --lr)")
    g.add_argument("--latent", type=_positive_int, default=64, help="noise numbers per image (default 64)")
    g.add_argument("--width", type=_positive_int, default=64,
                   help="channels of the 14x14 layers (the 7x7 ones have twice as many; default 64)")
    g.add_argument("--refine", type=int, default=0, metavar="K",
                   help="K more transposed convolutions (k3 s1, with batch norm and ReLU) in the "
                        "generator at 14x14, before its last layer: a deeper generator (default 0)")
    g.add_argument("--disc-width", type=_positive_int, metavar="W",
                   help="the discriminator's width, when it should differ from the generator's "
                        "(default: --width)")
    g.add_argument("--real-label", type=_positive_float, default=1.0, metavar="T",
                   help="the discriminator's target for real images (default 1; 0.9: one-sided label "
                        "smoothing; the generator's target stays 1)")
    g.add_argument("--ema", type=_decay, default=0.0, metavar="DECAY",
                   help="keep an exponential moving average of the generator's weights with this decay "
                        "(e.g. 0.999), and save, sample and score the averaged generator; the last step's "
                        "weights go to generator-last-step.npz (default 0: no averaging)")
    g.add_argument("--seed", type=int, default=0, help="seed of the weights, the noise and the shuffling")
    g.add_argument("--score-samples", type=int, default=10000, metavar="N",
                   help="generated digits to score at the end (default 10000; 0: no scoring)")
    g.add_argument("--epoch-score-samples", type=int, default=2000, metavar="N",
                   help="generated digits scored after every epoch, into history.json "
                        "(default 2000; 0: none)")
    g.add_argument("--keep-epochs", action="store_true",
                   help="also keep the generator of every epoch (generator-epoch-K.npz)")
    g.add_argument("--out", metavar="DIR", default=os.path.join("runs", "gan"),
                   help="where to save the results (default runs/gan)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in a log file)")

    e = sub.add_parser("evaluate", help="test accuracy of saved weights",
                       description="Load weights saved by 'train' and measure the test loss and accuracy.")
    e.add_argument("weights", help="a weights.npz file written by 'train'")
    e.add_argument("--model", choices=tuple(models.MODELS), default="tutorial",
                   help="the network the weights belong to (default tutorial)")
    _add_data_options(e)
    return top


def _explicit(argv, name) -> bool:
    """Was ``--name`` given on the command line (rather than left at its default)?"""
    flag = "--" + name.replace("_", "-")
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def _load(args, train_size=None):
    try:
        data = load_mnist(args.data, path=args.data_dir, normalize=args.normalize,
                          subset=None if train_size is None and args.test_size is None
                          else (train_size, args.test_size), balanced=False)
    except FileNotFoundError as error:
        lines = [line.strip(" -") for line in str(error).splitlines() if line.strip()]
        where = "; ".join(lines[1:-1])
        raise CliError(f"{lines[0].rstrip(':')}{f' ({where})' if where else ''}. Get full MNIST with "
                       "`python -m cnn_lib.data download`, or point --data-dir at a folder with the "
                       "four IDX files") from None
    return data


def _optimizer(args, model):
    if args.weight_decay < 0:
        raise CliError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if args.optimizer == "adam":
        return Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if not 0 <= args.momentum < 1:
        raise CliError(f"--momentum must be in [0, 1), got {args.momentum}")
    return SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)


def train(args, argv) -> int:
    if args.tutorial_setting:
        for key, value in TUTORIAL_SETTING.items():
            if not _explicit(argv, key):
                setattr(args, key, value)
    if args.init == "tutorial" and args.model != "tutorial":
        raise CliError("--init tutorial is the tutorial model's initialisation: use it with --model tutorial")
    if args.holdout_sample and args.data != "full":
        raise CliError("--holdout-sample leaves the sample's images out of full MNIST: "
                       "use it with --data full")
    data = _load(args, args.train_size)
    if args.holdout_sample:
        keep = np.ones(len(data.x_train), dtype=bool)
        held_out = sample_indices()
        keep[held_out[held_out < len(keep)]] = False
        data = data._replace(x_train=data.x_train[keep], y_train=data.y_train[keep])
    out_root = args.out or os.path.join("runs", args.model)
    print(f"{args.model} on {args.data} MNIST: {len(data.x_train):,} training and "
          f"{len(data.x_test):,} test images; batch {args.batch_size}, {args.optimizer} lr {args.lr}"
          + (f" momentum {args.momentum}" if args.optimizer == "sgd" else "")
          + (f" weight decay {args.weight_decay}" if args.weight_decay else "")
          + (", one-cycle schedule" if args.schedule == "onecycle" else "") + f", {args.epochs} epoch(s)")
    results, status = [], 0
    for seed in args.seeds:
        out = out_root if len(args.seeds) == 1 else os.path.join(out_root, f"seed-{seed}")
        os.makedirs(out, exist_ok=True)
        options = {"init": args.init} if args.model == "tutorial" else {}
        model = models.build(args.model, rng=seed, **options)
        loss_fn = SoftmaxCrossEntropy()
        callbacks = [Checkpoint(os.path.join(out, "weights.npz"))]
        if not args.no_progress:
            callbacks.insert(0, ProgressBar(desc=f"seed {seed}", leave=False))
        optimizer = _optimizer(args, model)
        if args.schedule == "onecycle":
            callbacks.insert(0, OneCycle(optimizer, args.lr))
        start = time.perf_counter()
        history = fit(model, loss_fn, optimizer, (data.x_train, data.y_train),
                      epochs=args.epochs, batch_size=args.batch_size, rng=seed,
                      val=(data.x_test, data.y_test), callbacks=callbacks)
        wall = time.perf_counter() - start
        for e in history.epochs:
            print(f"seed {seed} epoch {e['epoch']}: train loss {e['train_loss']:.4f}, "
                  f"train accuracy {e['train_accuracy']:.4f}, test loss {e['val_loss']:.4f}, "
                  f"test accuracy {e['val_accuracy']:.4f} ({e['seconds']:.1f} s)")
        if history.stopped:  # keep what was trained, even inside an unfinished epoch
            model.save(os.path.join(out, "weights.npz"))
        test_loss, test_accuracy = evaluate(model, loss_fn, data.x_test, data.y_test)
        history.to_json(os.path.join(out, "history.json"))
        history.to_csv(os.path.join(out, "history.csv"))
        _save_curves(history, os.path.join(out, "curves.png"), f"{args.model}, seed {seed}")
        results.append({"seed": seed, "test_accuracy": test_accuracy, "test_loss": test_loss,
                        "train_seconds": history.seconds, "wall_seconds": wall,
                        "stopped": history.stopped, "out": out})
        print(f"seed {seed}: test accuracy {test_accuracy:.4f}, training {history.seconds:.1f} s; "
              f"saved {out}{os.sep}weights.npz, history.json, history.csv, curves.png")
        if history.stopped == "interrupted":
            print(f"interrupted after {len(history.step_loss)} steps: the weights trained so far "
                  "are saved", file=sys.stderr)
            status = 130
            break
    if len(results) > 1:
        accs = [r["test_accuracy"] for r in results]
        print(f"test accuracy over {len(accs)} seeds: " + ", ".join(f"{a:.4f}" for a in accs)
              + f"; median {float(np.median(accs)):.4f}")
        with open(os.path.join(out_root, "seeds.json"), "w") as f:
            json.dump(results, f, indent=1)
    return status


def _save_curves(history, path, title):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .viz.training import plot_history

    fig = plot_history(history, title=title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate_command(args) -> int:
    if not os.path.isfile(args.weights):
        raise CliError(f"no such weights file: {args.weights} (train first: python -m cnn_lib train "
                       f"--model {args.model})")
    try:
        with np.load(args.weights, allow_pickle=False) as saved:
            names = set(saved.files)
    except (OSError, ValueError) as error:
        raise CliError(f"{args.weights} is not a weights file saved by cnn_lib ({error})") from None
    options = {}
    if args.model == "tutorial":  # the tutorial's own start has no conv bias
        options["init"] = "pytorch" if "0.bias" in names else "tutorial"
    model = models.build(args.model, **options)
    try:
        model.load(args.weights)
    except (KeyError, ValueError) as error:
        raise CliError(f"{args.weights} does not hold {args.model} weights ({error}); "
                       "is --model right?") from None
    data = _load(args)
    loss, accuracy = evaluate(model, SoftmaxCrossEntropy(), data.x_test, data.y_test)
    print(f"{args.model} from {args.weights} on {len(data.x_test):,} {args.data} test images: "
          f"loss {loss:.4f}, accuracy {accuracy:.4f}")
    return 0


def _write_json(path, value) -> None:
    """Write ``value`` as JSON to ``path`` through a temporary file that then replaces it, so a
    run killed while writing leaves the previous file whole (as ``Layer.save`` does for weights);
    a write that fails (a full disk) removes its temporary file."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(value, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def gan_command(args) -> int:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from . import gan
    from .viz.digits import show_digits

    if args.real_label > 1.0:
        raise CliError(f"--real-label is a probability target in (0, 1], got {args.real_label}")
    args.normalize = None  # raw pixels: the generator's range is [-1, 1], the classifier's its own
    data = _load(args, args.train_size)
    real = gan.to_tanh_range(data.x_train)
    rng = np.random.default_rng(args.seed)
    if args.refine < 0:
        raise CliError(f"--refine is a number of layers, 0 or more, got {args.refine}")
    gen = gan.generator(args.latent, args.width, rng=rng, refine=args.refine)
    disc_width = args.disc_width or args.width
    disc = gan.discriminator(disc_width, rng=rng)
    opt_g = Adam(gen.parameters(), lr=args.lr, betas=(0.5, 0.999))
    lr_d = args.lr_d or args.lr
    opt_d = Adam(disc.parameters(), lr=lr_d, betas=(0.5, 0.999))
    average = gan.WeightAverage(gen, args.ema) if args.ema else None
    os.makedirs(args.out, exist_ok=True)
    fixed_z = np.random.default_rng(12345).standard_normal((64, args.latent)).astype(np.float32)
    steps = -(-len(real) // args.batch_size)
    print(f"DCGAN on {args.data} MNIST: {len(real):,} images, batch {args.batch_size}, Adam lr {args.lr}"
          + (f" (discriminator {lr_d})" if lr_d != args.lr else "")
          + f", "
          f"latent {args.latent}, width {args.width}"
          + (f" (discriminator {disc_width})" if disc_width != args.width else "")
          + (f", {args.refine} refining layer(s)" if args.refine else "")
          + f", {args.epochs} epoch(s) of {steps} steps"
          + (f", weight average {args.ema}" if average else "")
          + (f", real label {args.real_label}" if args.real_label != 1.0 else ""))
    history = {"d_loss": [], "g_loss": [], "epoch_seconds": [], "inception_score": [], "digit_shares": []}
    if average:
        history["last_step_inception_score"] = []
    result = gen
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=args.epochs * steps, unit="step")
    status = 0
    try:
        for epoch in range(1, args.epochs + 1):
            start = time.perf_counter()
            order = rng.permutation(len(real))
            for first in range(0, len(real), args.batch_size):
                batch = real[order[first:first + args.batch_size]]
                z = rng.standard_normal((len(batch), args.latent)).astype(np.float32)
                d_loss, g_loss = gan.train_step(gen, disc, opt_g, opt_d, batch, z, real_label=args.real_label)
                if average:
                    average.update()
                if not (np.isfinite(d_loss) and np.isfinite(g_loss)):
                    raise CliError(f"the losses became {d_loss}, {g_loss} at epoch {epoch}: "
                                   "try a smaller --lr")
                history["d_loss"].append(d_loss)
                history["g_loss"].append(g_loss)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, d=f"{d_loss:.2f}", g=f"{g_loss:.2f}", refresh=False)
            history["epoch_seconds"].append(time.perf_counter() - start)
            result = average.finish(seed=args.seed + 2) if average else gen
            result.save(os.path.join(args.out, "generator.npz"))
            disc.save(os.path.join(args.out, "discriminator.npz"))
            if average:
                gen.save(os.path.join(args.out, "generator-last-step.npz"))
            if args.keep_epochs:
                result.save(os.path.join(args.out, f"generator-epoch-{epoch}.npz"))
            measured = ""
            if args.epoch_score_samples > 0:
                epoch_scores = gan.score(result, args.epoch_score_samples, seed=args.seed + 1)
                history["inception_score"].append(epoch_scores["inception_score"])
                history["digit_shares"].append(epoch_scores["digit_shares"])
                measured = (f", {args.epoch_score_samples} samples: inception score "
                            f"{epoch_scores['inception_score']:.2f}, rarest digit "
                            f"{min(epoch_scores['digit_shares']):.1%}")
                if average:
                    last = gan.score(gen, args.epoch_score_samples, seed=args.seed + 1)["inception_score"]
                    history["last_step_inception_score"].append(last)
                    measured += f" (the last step's weights: {last:.2f})"
            was_training = result.training
            samples = result.eval().forward(fixed_z)
            result.train(was_training)
            fig = show_digits(samples[:, 0], None, title=f"DCGAN samples after epoch {epoch}", ncols=8)
            fig.savefig(os.path.join(args.out, f"samples-epoch-{epoch}.png"), dpi=80)
            plt.close(fig)
            _write_json(os.path.join(args.out, "history.json"), history)  # a killed run keeps it
            d_recent, g_recent = np.mean(history["d_loss"][-100:]), np.mean(history["g_loss"][-100:])
            print(f"epoch {epoch}: {history['epoch_seconds'][-1]:.1f} s, last 100 steps: D loss "
                  f"{d_recent:.3f}, G loss {g_recent:.3f}{measured}")
    except KeyboardInterrupt:
        print("interrupted: the weights of the last finished epoch are saved", file=sys.stderr)
        status = 130
    finally:
        if bar is not None:
            bar.close()
        _write_json(os.path.join(args.out, "history.json"), history)
    if status or not args.score_samples:
        return status
    scores = gan.score(result, args.score_samples, seed=args.seed + 1, real=data.x_test)
    with open(os.path.join(args.out, "scores.json"), "w") as f:
        json.dump(scores, f, indent=1)
    shares = ", ".join(f"{d}: {s:.1%}" for d, s in enumerate(scores["digit_shares"]))
    print(f"{args.score_samples} generated digits: inception score {scores['inception_score']:.2f}, "
          f"Frechet distance {scores.get('frechet_distance', float('nan')):.2f}; digit shares {shares}")
    if "real_inception_score" in scores:
        print(f"the real test digits: inception score {scores['real_inception_score']:.2f}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    try:
        if args.command == "train":
            return train(args, argv)
        if args.command == "gan":
            return gan_command(args)
        return evaluate_command(args)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
