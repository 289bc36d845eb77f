"""The training loop (fit, evaluate, predict, History), its callbacks (progress bar,
checkpoint, stopping, the live dashboard), the course's named models and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cnn_lib import (
    SGD,
    Callback,
    Checkpoint,
    OneCycle,
    ProgressBar,
    SoftmaxCrossEntropy,
    StopWhen,
    evaluate,
    fit,
    models,
    predict,
)
from cnn_lib import __main__ as cli
from cnn_lib.data import load_mnist, sample_indices
from cnn_lib.training import GradNorms
from cnn_lib.widgets import Dashboard

DATA = load_mnist(normalize="tutorial", subset=(300, 100))


def tiny_run(epochs=2, callbacks=(), seed=0, lr=0.05, batch_size=32):
    model = models.tutorial_net(rng=seed)
    opt = SGD(model.parameters(), lr=lr, momentum=0.9)
    history = fit(model, SoftmaxCrossEntropy(), opt, (DATA.x_train, DATA.y_train), epochs=epochs,
                  batch_size=batch_size, rng=seed, val=(DATA.x_test, DATA.y_test), callbacks=callbacks)
    return model, history


def test_fit_learns_and_keeps_a_history():
    model, history = tiny_run(epochs=3)
    assert len(history.step_loss) == 3 * 10  # 300 images, batches of 32: 10 steps an epoch
    assert [e["epoch"] for e in history.epochs] == [1, 2, 3] and history.stopped is None
    assert set(history.epochs[0]) == {"epoch", "train_loss", "train_accuracy", "val_loss",
                                      "val_accuracy", "seconds"}
    assert history.epochs[-1]["val_accuracy"] > 0.6  # chance is 0.1
    assert np.mean(history.step_loss[-5:]) < 0.6 * np.mean(history.step_loss[:5])
    loss, accuracy = evaluate(model, SoftmaxCrossEntropy(), DATA.x_test, DATA.y_test)
    assert accuracy == history.epochs[-1]["val_accuracy"] and np.isclose(loss, history.epochs[-1]["val_loss"])
    logits = predict(model, DATA.x_test, batch_size=7)
    assert logits.shape == (100, 10) and not model.training


def test_fit_is_reproducible_with_a_seed():
    _, a = tiny_run(epochs=1, seed=3)
    _, b = tiny_run(epochs=1, seed=3)
    assert a.step_loss == b.step_loss


def test_history_writes_json_and_csv(tmp_path):
    _, history = tiny_run(epochs=2)
    history.to_json(tmp_path / "h.json")
    history.to_csv(tmp_path / "h.csv")
    saved = json.loads((tmp_path / "h.json").read_text())
    assert saved["step_loss"] == history.step_loss and len(saved["epochs"]) == 2
    lines = (tmp_path / "h.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,train_loss") and len(lines) == 3


class Recorder(Callback):
    def __init__(self, stop_at=None):
        self.calls, self.stop_at = [], stop_at

    def on_train_begin(self, run):
        self.calls.append("begin")

    def on_step_end(self, run):
        self.calls.append("step")
        if run.step == self.stop_at:
            run.stop, run.reason = True, "enough"

    def on_epoch_end(self, run):
        self.calls.append("epoch")

    def on_train_end(self, run):
        self.calls.append("end")


def test_callbacks_are_called_in_order_and_can_stop_the_run():
    recorder = Recorder()
    tiny_run(epochs=2, callbacks=[recorder])
    assert recorder.calls == ["begin"] + (["step"] * 10 + ["epoch"]) * 2 + ["end"]
    stopper = Recorder(stop_at=13)
    _, history = tiny_run(epochs=3, callbacks=[stopper])
    assert history.stopped == "enough" and len(history.step_loss) == 13
    assert len(history.epochs) == 1  # the unfinished second epoch is not recorded


def test_ctrl_c_ends_the_run_cleanly_and_keeps_the_weights():
    class Interrupt(Callback):
        def on_step_end(self, run):
            if run.step == 4:
                raise KeyboardInterrupt

    ended = Recorder()
    model, history = tiny_run(epochs=2, callbacks=[Interrupt(), ended])
    assert history.stopped == "interrupted" and len(history.step_loss) == 4
    assert ended.calls[-1] == "end"
    assert np.all(np.isfinite(model.params["3.weight"]))


def test_stop_when_the_loss_diverges_or_after_max_steps():
    _, history = tiny_run(epochs=2, callbacks=[StopWhen(max_steps=5)])
    assert len(history.step_loss) == 5 and "max_steps" in history.stopped

    class Poison(Callback):
        def on_step_end(self, run):
            run.loss = float("nan")

    _, history = tiny_run(epochs=1, callbacks=[Poison(), StopWhen()])
    assert len(history.step_loss) == 1 and "nan" in history.stopped


def test_checkpoint_saves_every_epoch_or_only_the_best(tmp_path):
    every = Checkpoint(tmp_path / "every.npz")
    best = Checkpoint(tmp_path / "best.npz", monitor="val_accuracy")
    model, history = tiny_run(epochs=3, callbacks=[every, best])
    assert every.saved_epochs == [1, 2, 3]
    accs = [e["val_accuracy"] for e in history.epochs]
    assert best.saved_epochs == [i + 1 for i in range(3) if accs[i] > max(accs[:i], default=-1)]
    again = models.tutorial_net(rng=9)
    again.load(tmp_path / "every.npz")
    np.testing.assert_array_equal(again.params["3.weight"], model.params["3.weight"])
    with pytest.raises(KeyError, match="no 'val_acc'"):
        tiny_run(epochs=1, callbacks=[Checkpoint(tmp_path / "x.npz", monitor="val_acc")])


def test_progress_bar_counts_every_step(capsys):
    bar = ProgressBar(file=sys.stdout, mininterval=0, ascii=True)
    tiny_run(epochs=2, callbacks=[bar])
    assert bar.bar.n == 20 and bar.bar.total == 20


def test_bad_arguments_are_refused_clearly():
    model = models.tutorial_net(rng=0)
    opt = SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="x and y must have the same length"):
        fit(model, SoftmaxCrossEntropy(), opt, (DATA.x_train, DATA.y_train[:-1]))
    with pytest.raises(TypeError, match=r"train must be a pair \(x, y\)"):
        fit(model, SoftmaxCrossEntropy(), opt, DATA.x_train)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        fit(model, SoftmaxCrossEntropy(), opt, (DATA.x_train, DATA.y_train), epochs=0)


# ----------------------------------------------------------------------------- dashboard


def test_the_dashboard_offline_draws_nothing_live_but_gives_the_final_figure():
    dashboard = Dashboard(every=3)
    assert not dashboard.live  # no Jupyter kernel in pytest
    _, history = tiny_run(epochs=2, callbacks=[dashboard])
    assert dashboard.redraws == 0
    fig = dashboard.figure()
    loss_ax, acc_ax = fig.axes
    assert len(loss_ax.lines) == 2 and len(acc_ax.lines) == 2  # steps + mean; train + val
    np.testing.assert_allclose(acc_ax.lines[1].get_ydata(), [e["val_accuracy"] for e in history.epochs])


def test_the_dashboard_live_redraws_and_gives_way_to_the_final_figure(monkeypatch):
    """The widget path as in Jupyter (display patched): redrawn every 4 steps, stopped after a
    step on request, and replaced by a static figure of the final curves that names why it
    stopped."""
    pytest.importorskip("ipywidgets")
    import IPython.display

    shown = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj))

    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append(("display", obj))
                        or (Handle() if kw.get("display_id") else None))
    dashboard = Dashboard(every=4, live=True, compare={"earlier": tiny_run(epochs=1)[1]})

    class StopAt6(Callback):
        def on_step_end(self, run):
            if run.step == 6:
                dashboard.request_stop()

    _, history = tiny_run(epochs=3, callbacks=[StopAt6(), dashboard])
    assert history.stopped == "stopped with Dashboard.request_stop()"
    assert len(history.step_loss) == 6
    assert dashboard.redraws == 1 + 1  # at the start, and at step 4
    assert shown[-1][0] == "update"  # the widget gives way to the final static figure
    final = shown[-1][1]
    assert "stopped with Dashboard.request_stop()" in final._suptitle.get_text()
    assert all(widget.comm is None for widget in dashboard._widgets)  # closed: no saved widget state
    assert [line.get_label() for line in final.axes[0].lines if not line.get_label().startswith("_")] == [
        "earlier", "this run"]


# ----------------------------------------------------------------------------- models


def test_the_tutorial_model_can_start_as_the_tutorial_does():
    model = models.tutorial_net(rng=0, init="tutorial")
    assert "0.bias" not in model.params  # the tutorial's conv has no bias
    w = model.params["0.weight"]
    assert w.shape == (8, 1, 3, 3) and 0.05 < w.std() < 0.2  # randn / 9: std 0.11
    assert np.all(model.params["3.bias"] == 0) and model.params["3.weight"].std() < 2e-3  # randn / 1352
    assert models.build("lenet", rng=0).forward(DATA.x_test[:2]).shape == (2, 10)
    with pytest.raises(ValueError, match="unknown model 'resnet': choose one of tutorial, lenet"):
        models.build("resnet")


# ----------------------------------------------------------------------------- command line


def test_cli_trains_saves_and_evaluates(tmp_path, capsys):
    out = tmp_path / "run"
    status = cli.main(["train", "--model", "tutorial", "--train-size", "300", "--test-size", "100",
                       "--epochs", "2", "--no-progress", "--out", str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "seed 0 epoch 2:" in printed and "test accuracy" in printed
    assert sorted(os.listdir(out)) == ["curves.png", "history.csv", "history.json", "weights.npz"]
    history = json.loads((out / "history.json").read_text())
    assert len(history["epochs"]) == 2
    assert cli.main(["evaluate", str(out / "weights.npz"), "--model", "tutorial", "--test-size", "100"]) == 0
    accuracy = float(capsys.readouterr().out.rsplit("accuracy ", 1)[1])
    assert accuracy == pytest.approx(history["epochs"][-1]["val_accuracy"])


def test_cli_several_seeds_and_the_tutorial_setting(tmp_path, capsys):
    status = cli.main(["train", "--tutorial-setting", "--train-size", "50", "--test-size", "50",
                       "--epochs", "1", "--seeds", "0,1", "--no-progress", "--out", str(tmp_path)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "batch 1, sgd lr 0.005 momentum 0.0, 1 epoch(s)" in printed
    assert "test accuracy over 2 seeds" in printed
    seeds = json.loads((tmp_path / "seeds.json").read_text())
    assert [s["seed"] for s in seeds] == [0, 1] and all(os.path.isdir(s["out"]) for s in seeds)


@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "0"], "--epochs: expected a positive whole number, got '0'"),
    (["train", "--model", "resnet"], "invalid choice: 'resnet'"),
    (["train", "--data", "full", "--data-dir", "/no/such/folder"], "error: mnist: none of these folders"),
    (["evaluate", "/no/such/weights.npz"], "error: no such weights file"),
    (["train", "--model", "lenet", "--init", "tutorial"], "--init tutorial is the tutorial model's"),
    (["train", "--holdout-sample"], "--holdout-sample leaves the sample's images out of full MNIST"),
    (["train", "--weight-decay", "-1"], "--weight-decay must be >= 0"),
    (["gan", "--ema", "1"], "--ema: expected a number in [0, 1)"),
    (["gan", "--real-label", "1.5"], "--real-label is a probability target in (0, 1]"),
])
def test_cli_says_in_one_line_what_is_wrong(argv, message, capsys):
    try:
        status = cli.main(argv)
    except SystemExit as exit_:  # argparse
        status = exit_.code
    assert status == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_one_cycle_sets_the_learning_rate_of_every_step():
    model = models.tutorial_net(rng=0)
    opt = SGD(model.parameters(), lr=1.0, momentum=0.9)
    seen = []

    class Spy(Callback):
        def on_step_end(self, run):
            seen.append(opt.lr)

    schedule = OneCycle(opt, peak_lr=0.1, warmup=0.2)
    fit(model, SoftmaxCrossEntropy(), opt, (DATA.x_train, DATA.y_train), epochs=2, batch_size=30, rng=0,
        callbacks=[Spy(), schedule])   # the spy runs first: it sees the rate the step used
    assert len(schedule.lrs) == 20 and seen == schedule.lrs
    np.testing.assert_allclose(schedule.lrs[:5], [0.01, 0.0325, 0.055, 0.0775, 0.1])
    np.testing.assert_allclose(schedule.lrs[4:], 0.1 * (20 - np.arange(4, 20)) / 16)
    assert np.all(np.diff(schedule.lrs[4:]) < 0) and schedule.lrs[-1] > 0
    with pytest.raises(ValueError, match="warmup"):
        OneCycle(opt, 0.1, warmup=1.0)
    with pytest.raises(ValueError, match="peak_lr"):
        OneCycle(opt, 0)


def test_grad_norms_records_each_weight_every_few_steps():
    norms, every_step = GradNorms(every=3), GradNorms(every=1, only="")
    model, history = tiny_run(epochs=1, callbacks=[norms, every_step])   # 10 steps of 30 images
    assert norms.steps == [3, 6, 9] and every_step.steps == list(range(1, 11))
    assert set(norms.norms) == {"0.weight", "3.weight"} and set(every_step.norms) == set(model.params)
    assert all(len(v) == 3 and all(x > 0 for x in v) for v in norms.norms.values())
    # the last step's gradients are still in grads after fit: the last record is their RMS
    for name, grad in model.grads.items():
        assert every_step.norms[name][-1] == pytest.approx(np.sqrt(np.mean(grad.astype(np.float64) ** 2)))


def test_lenet_small_and_the_shipped_weights():
    net = models.build("lenet_small", rng=0)
    assert [layer.name for layer in net] == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d",
                                             "Flatten", "Linear", "ReLU", "Linear"]
    assert net.params["0.weight"].shape == (16, 1, 3, 3) and net.params["7.weight"].shape == (128, 32 * 7 * 7)
    shipped = models.pretrained("lenet_small")
    assert not shipped.training
    data = load_mnist(normalize="standard")
    # the shipped weights never saw these images (trained with --holdout-sample)
    accuracy = np.mean(predict(shipped, data.x_test).argmax(axis=1) == data.y_test)
    assert accuracy > 0.98
    with pytest.raises(ValueError, match="lenet_small"):
        models.pretrained("resnet")


def test_sample_indices_name_the_samples_images_in_full_mnist():
    idx = sample_indices()
    assert idx.shape == (5000,) and len(np.unique(idx)) == 5000 and idx.min() >= 0 and idx.max() < 60000


def test_cli_gan_trains_saves_samples_and_scores(tmp_path, capsys):
    status = cli.main(["gan", "--train-size", "128", "--epochs", "2", "--width", "8", "--latent", "16",
                       "--ema", "0.999", "--score-samples", "300", "--epoch-score-samples", "200",
                       "--keep-epochs",
                       "--no-progress", "--out", str(tmp_path)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "epoch 2:" in printed and "200 samples: inception score" in printed and "rarest digit" in printed
    assert sorted(os.listdir(tmp_path)) == [
        "discriminator.npz", "generator-epoch-1.npz", "generator-epoch-2.npz", "generator-last-step.npz",
        "generator.npz", "history.json", "samples-epoch-1.png", "samples-epoch-2.png", "scores.json"]
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["d_loss"]) == len(history["g_loss"]) == 4 and len(history["epoch_seconds"]) == 2
    assert len(history["inception_score"]) == 2 and all(1.0 <= s <= 10.0 for s in history["inception_score"])
    assert len(history["last_step_inception_score"]) == 2
    # generator.npz is the weight average (--ema 0.999), not the last step's weights
    averaged, last = np.load(tmp_path / "generator.npz"), np.load(tmp_path / "generator-last-step.npz")
    assert not np.array_equal(averaged["0.weight"], last["0.weight"])
    assert [len(shares) for shares in history["digit_shares"]] == [10, 10]
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["n"] == 300 and 1.0 <= scores["inception_score"] <= 10.0
    assert sum(scores["digit_shares"]) == pytest.approx(1.0) and scores["frechet_distance"] > 0
    assert 9.5 < scores["real_inception_score"] <= 10.0     # the 1,000 real test digits of the sample


def test_cli_gan_keeps_its_history_when_killed_after_an_epoch(tmp_path):
    """SIGKILL (or a JupyterHub culler's SIGTERM) runs no cleanup: history.json must be on disk already."""
    command = [sys.executable, "-u", "-m", "cnn_lib", "gan", "--train-size", "64", "--epochs", "500",
               "--width", "4", "--latent", "8", "--score-samples", "0", "--epoch-score-samples", "0",
               "--no-progress", "--out", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in process.stdout:
            if line.startswith("epoch 2:"):
                break
        process.kill()
    finally:
        process.kill()
        process.wait(timeout=60)
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["epoch_seconds"]) >= 2 and len(history["d_loss"]) == len(history["epoch_seconds"])
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_a_failed_history_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "history.json"
    cli._write_json(str(path), {"epoch_seconds": [1.0]})

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli.json, "dump", full_disk)
    with pytest.raises(OSError, match="No space"):
        cli._write_json(str(path), {"epoch_seconds": [1.0, 2.0]})
    assert json.loads(path.read_text()) == {"epoch_seconds": [1.0]}
    assert os.listdir(tmp_path) == ["history.json"]


def gan_shape(path):
    from cnn_lib import gan

    with np.load(path) as saved:
        return gan.shape_of(saved)


def test_cli_gan_by_default_saves_the_last_steps_weights(tmp_path, capsys):
    status = cli.main(["gan", "--train-size", "64", "--epochs", "1", "--width", "4", "--disc-width", "6",
                       "--lr", "1e-4", "--lr-d", "4e-4", "--latent", "8", "--refine", "1",
                       "--score-samples", "0", "--epoch-score-samples", "0", "--no-progress",
                       "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert status == 0 and "weight average" not in printed and "width 4 (discriminator 6)" in printed
    assert "Adam lr 0.0001 (discriminator 0.0004), latent 8" in printed and "1 refining layer(s)" in printed
    assert gan_shape(tmp_path / "generator.npz") == (8, 4, 1)
    assert np.load(tmp_path / "generator.npz")["4.weight"].shape == (8, 4, 4, 4)
    assert np.load(tmp_path / "discriminator.npz")["2.weight"].shape == (12, 6, 4, 4)
    assert "generator-last-step.npz" not in os.listdir(tmp_path)
    assert "last_step_inception_score" not in json.loads((tmp_path / "history.json").read_text())


def test_cli_help_and_the_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "cnn_lib", "train", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    for option in ("--model", "--data", "--epochs", "--batch-size", "--lr", "--seeds", "--tutorial-setting",
                   "--out", "Ctrl-C", "--schedule", "--weight-decay", "--holdout-sample", "lenet_small"):
        assert option in result.stdout, option


# ----------------------------------------------------------------------------- filters and activations


def test_snapshots_and_the_filter_explorer_follow_the_filters_through_training():
    from cnn_lib.widgets import FilterExplorer, Snapshots

    snapshots = Snapshots("0.weight")
    model, _ = tiny_run(epochs=2, callbacks=[snapshots])
    assert snapshots.labels == ["before training", "after epoch 1", "after epoch 2"]
    np.testing.assert_array_equal(snapshots.values[-1], model.params["0.weight"])
    explorer = FilterExplorer(snapshots)
    fig = explorer.draw(0)
    assert explorer.last["label"] == "before training" and np.all(explorer.last["moved"] == 0)
    assert len([ax for ax in fig.axes if ax.images]) == 8 and len(fig.axes) == 8 + 1  # + the colour bar
    box = explorer.widget()
    explorer.controls["when"].value = 1  # what moving the slider does
    assert explorer.last["label"] == "after epoch 1" and np.all(explorer.last["moved"] > 0)
    assert box.children[1] is explorer.output
    with pytest.raises(KeyError, match="no parameter '9.weight'"):
        tiny_run(epochs=1, callbacks=[Snapshots("9.weight")])
    with pytest.raises(ValueError, match="no snapshots"):
        FilterExplorer([])


def test_the_activation_explorer_shows_each_stage_after_a_conv():
    from cnn_lib.widgets import ActivationExplorer

    lenet = models.lenet(rng=0)
    explorer = ActivationExplorer(lenet, DATA.x_test[:5], DATA.y_test[:5])
    assert explorer.convs == [0, 3]
    stages = explorer.stages(2, 3)
    assert [(name, maps.shape) for name, maps in stages.items()] == [
        ("3: Conv2d", (64, 14, 14)), ("4: ReLU", (64, 14, 14)), ("5: MaxPool2d", (64, 7, 7))]
    np.testing.assert_array_equal(stages["4: ReLU"], np.maximum(stages["3: Conv2d"], 0))
    explorer.widget()
    explorer.controls["layer"].value = 3
    explorer.controls["channel"].value = 40  # allowed once layer 3 (64 channels) is chosen
    explorer.controls["image"].value = 4
    assert (explorer.last["image"], explorer.last["layer"], explorer.last["channel"]) == (4, 3, 40)
    with pytest.raises(ValueError, match="channel must be in 0..31"):
        explorer.draw(0, 0, 32)
    with pytest.raises(ValueError, match="index of a Conv2d"):
        explorer.stages(0, 1)
    tutorial = ActivationExplorer(models.tutorial_net(rng=0), DATA.x_test[:2])
    assert list(tutorial.stages(0, 0)) == ["0: Conv2d", "1: MaxPool2d"]


def test_confusion_matrix_and_confident_mistakes():
    from cnn_lib import viz

    y_true = np.array([0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 1, 1, 0])
    counts = viz.confusion_matrix(y_true, y_pred, 3)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    fig = viz.plot_confusion(y_true, y_pred, 3)
    assert "accuracy 60.0%" in fig.axes[0].get_title()
    probs = np.eye(10)[[3, 3, 5]] * 0.9 + 0.01
    fig = viz.plot_confident_mistakes(DATA.x_test[:3], np.array([3, 4, 6]), probs, count=2)
    assert "2 wrong of 3" in fig._suptitle.get_text()


def test_plot_histories_names_runs_by_colour_and_curves_by_style():
    from cnn_lib.training import History

    def run(accuracies, val=True):
        history = History(step_loss=[2.3, 1.0, 0.5])
        history.epochs = [{"epoch": i + 1, "train_accuracy": a, **({"val_accuracy": a} if val else {})}
                          for i, a in enumerate(accuracies)]
        return history

    runs = {f"run {k}": run([0.1 * k, 0.2 * k]) for k in range(1, 5)}
    fig = __import__("cnn_lib").viz.plot_histories(runs)
    loss_ax, acc_ax = fig.axes
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == list(runs)
    assert [t.get_text() for t in acc_ax.get_legend().get_texts()] == [
        "training images (mean over the epoch)", "held-out images"]  # two lines, however many runs
    fig = __import__("cnn_lib").viz.plot_histories({"no held-out data": run([0.5], val=False)})
    only_train = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert only_train == ["training images (mean over the epoch)"]


def test_a_diverging_run_is_stopped_and_says_so():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the overflows on the way to infinity
        model, history = tiny_run(epochs=3, lr=5.0)
    assert history.stopped.startswith("diverged at step") and "smaller learning rate" in history.stopped
    assert len(history.step_loss) < 30 and np.all(np.isfinite(history.step_loss))
    fig = __import__("cnn_lib").viz.plot_history(history)  # a blown-up run still plots
    assert fig.axes[0].get_ylim()[1] < 10


def test_cli_ctrl_c_stops_cleanly_and_keeps_the_weights(tmp_path, monkeypatch, capsys):
    real_fit = cli.fit

    class Interrupt(Callback):
        def on_step_end(self, run):
            if run.step == 3:
                raise KeyboardInterrupt

    def fit_then_interrupt(*args, callbacks=(), **kwargs):
        return real_fit(*args, callbacks=[*callbacks, Interrupt()], **kwargs)

    monkeypatch.setattr(cli, "fit", fit_then_interrupt)
    status = cli.main(["train", "--train-size", "300", "--test-size", "50", "--epochs", "2", "--no-progress",
                       "--out", str(tmp_path)])
    assert status == 130
    assert "interrupted after 3 steps: the weights trained so far are saved" in capsys.readouterr().err
    saved = models.tutorial_net(rng=0)
    saved.load(tmp_path / "weights.npz")  # a complete, loadable file
    assert json.loads((tmp_path / "history.json").read_text())["stopped"] == "interrupted"
