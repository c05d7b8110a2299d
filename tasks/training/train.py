"""LeNet-5 as in the course notes, trained reproducibly with early stopping."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Param
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from serving.preprocessing import to_model_input
from tasks.data.dataset import Dataset, stratified_split
from tasks.data.transforms import LIGHTING_BRIGHTNESS, LIGHTING_CONTRAST, moved
from tasks.params import Architecture, TrainParams
from tasks.training.curves import plot_training_curves


@dataclass
class TrainResult:
    model: Any  # keras.Model; typed loosely so importing this module stays cheap
    history: dict[str, list[float]]
    best_epoch: int
    epochs_run: int

    @property
    def parameters(self) -> int:
        """The model's parameter count, which its server must report."""
        return int(self.model.count_params())


def build_lenet5(
    num_classes: int = 10,
    learning_rate: Any = 1e-3,
    weight_decay: float = 0.0,
    architecture: Architecture | None = None,
    input_moments: tuple[float, float] = (0.0, 1.0),
    flip: bool = False,
    mixed_precision: bool = False,
):  # -> keras.Model
    """Pad 28x28 to 32x32, Conv 6@5x5 relu, AvgPool, Conv 16@5x5 relu, AvgPool, Dense 120, 84, softmax:
    LeNet-5's layers and 61,706 parameters. `architecture` widens it, doubles the convolutions of each
    block (VGG), adds dropout or batch normalisation for the hyperparameter search and the `vgg` preset.

    With `architecture.standardise` the first layer maps the 0-1 input to mean 0 and variance 1 with the
    training images' `input_moments` (mean, standard deviation), as LeNet-5 itself did: ReLU layers
    without batch normalisation learn faster from centred inputs. Inside the model, so every client and
    the export keep sending 0-1 pixels; no weights, so the parameter count stays LeNet-5's.

    `flip` mirrors training images at random in the graph (inactive at inference); `mixed_precision`
    computes the hidden layers in bfloat16 with float32 weights. Both are for training only: `train_model`
    hands on a float32 copy without the flip (`inference_copy`)."""
    import keras

    arch = architecture or Architecture()
    policy = {"dtype": "mixed_bfloat16"} if mixed_precision else {}
    layers = [keras.Input(shape=(28, 28, 1), name="image")]
    if arch.input_padding:  # zeros of the 0-1 input: background, standardised like the image's own
        layers.append(keras.layers.ZeroPadding2D(arch.input_padding, name="pad"))
    if arch.standardise:
        mean, deviation = input_moments
        layers.append(keras.layers.Rescaling(1 / deviation, offset=-mean / deviation, name="standardise"))
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", name="flip"))
    for block, filters in ((1, arch.conv1_filters), (2, arch.conv2_filters)):
        for step in range(arch.convs_per_block):
            suffix = f"{block}{'ab'[step]}" if arch.convs_per_block > 1 else str(block)
            convolution = {"filters": filters, "kernel_size": arch.kernel_size, "padding": arch.padding, **policy}
            if arch.batch_norm:  # conv -> BN -> relu, the usual order
                layers += [
                    keras.layers.Conv2D(**convolution, use_bias=False, name=f"conv{suffix}"),
                    keras.layers.BatchNormalization(name=f"bn{suffix}", **policy),
                    keras.layers.ReLU(name=f"relu{suffix}", **policy),
                ]
            else:
                layers.append(keras.layers.Conv2D(**convolution, activation="relu", name=f"conv{suffix}"))
        pool = keras.layers.MaxPooling2D if arch.pooling == "max" else keras.layers.AveragePooling2D
        layers.append(pool(2, name=f"pool{block}", **policy))
    layers.append(keras.layers.Flatten(name="flatten", **policy))
    for index, units in ((1, arch.dense1), (2, arch.dense2)):
        if arch.dropout:
            layers.append(keras.layers.Dropout(arch.dropout, name=f"dropout{index}", **policy))
        layers.append(keras.layers.Dense(units, activation="relu", name=f"fc{index}", **policy))
    # float32 always: a softmax in bfloat16 rounds probabilities to 3 significant digits
    layers.append(keras.layers.Dense(num_classes, activation="softmax", name="probabilities"))
    model = keras.Sequential(layers, name="lenet5")
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
        if weight_decay
        else keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def inference_copy(model, num_classes: int, architecture: Architecture, input_moments: tuple[float, float]):
    """The trained `model` as what is evaluated, exported and served: float32 throughout and without the
    training-only flip layer, so the export, its parity check and the out-of-distribution statistics see
    the same plain graph whatever the training options were. The weights are copied layer by layer."""
    copy = build_lenet5(num_classes, architecture=architecture, input_moments=input_moments)
    for layer in copy.layers:
        layer.set_weights(model.get_layer(layer.name).get_weights())
    return copy


def augmented_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int):  # -> tf.data.Dataset
    """Shifted and mirrored copies, fresh every epoch: garments keep their class when flipped or moved by
    a couple of pixels. It regularises the wide variants but slows convergence: give it more epochs."""
    import keras
    import tensorflow as tf

    augment = keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomTranslation(2 / 28, 2 / 28, fill_mode="constant", seed=seed),
        ]
    )
    return (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .map(lambda images, labels: (augment(images, training=True), labels), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def with_moved_copies(pixels: np.ndarray, labels: np.ndarray, params: TrainParams) -> tuple[np.ndarray, np.ndarray]:
    """The images plus rotated and shifted copies of a random `moved_copies` share of them: real photos
    are rarely upright and centred, and the dataset's garments always are. Copies rather than
    replacements, so the model still sees every garment as the dataset shows it."""
    if not params.moved_copies or not (params.max_rotation or params.max_shift):
        return pixels, labels
    rng = np.random.default_rng([params.seed, 1])
    chosen = np.flatnonzero(rng.random(len(pixels)) < params.moved_copies)
    angles = rng.uniform(-params.max_rotation, params.max_rotation, len(chosen))
    shifts = rng.integers(-params.max_shift, params.max_shift + 1, (len(chosen), 2))
    # Moved as the rotation_shift slice is (Pillow): ~60 us an image, and the same copies on every machine.
    copies = np.stack(
        [
            np.asarray(moved(pixels[i], angle, int(dx), int(dy)))
            for i, angle, (dx, dy) in zip(chosen, angles, shifts, strict=True)
        ]
    )
    return np.concatenate([pixels, copies]), np.concatenate([labels, labels[chosen]])


def relit(pixels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A copy of 0-255 images in which a random `share` has lower contrast (x0.6-1) and a lifted black
    level (+0-40): the dataset's studio lighting never varies, and a model trained only on it in few large
    steps loses 6-7 points on dimmer or hazier shots (the hold-out's lighting slice). Drawn once, not per
    epoch, so training keeps Keras' in-memory input path (a per-epoch tf.data map was no faster, no better)."""
    if not share:
        return pixels
    rng = np.random.default_rng(seed)
    chosen = rng.random(len(pixels)) < share
    count = int(chosen.sum())
    contrast = rng.uniform(*LIGHTING_CONTRAST, count)[:, None, None]
    brightness = rng.uniform(*LIGHTING_BRIGHTNESS, count)[:, None, None]
    out = pixels.copy()
    out[chosen] = np.clip(np.rint(pixels[chosen] * contrast + brightness), 0, 255)
    return out


def learning_rate_schedule(params: TrainParams, steps_per_epoch: int) -> Any:
    """`cosine`: one epoch of warm-up from a tenth of the rate, then cosine decay to 0 at the last epoch,
    so the whole budget is used and no epochs go to waiting for a plateau; `plateau`: a constant rate
    that ReduceLROnPlateau cuts."""
    import keras

    if params.schedule == "plateau":
        return params.learning_rate
    return keras.optimizers.schedules.CosineDecay(
        params.learning_rate / 10,
        decay_steps=max(1, steps_per_epoch * (params.epochs - 1)),
        warmup_target=params.learning_rate,
        warmup_steps=steps_per_epoch,
    )


def train_model(dataset: Dataset, params: TrainParams, extra_callbacks: Sequence = ()) -> TrainResult:
    """Fit on a stratified train/validation split; the test split is never seen here. `extra_callbacks`:
    Keras callbacks such as `run_callbacks`."""
    import keras

    keras.utils.set_random_seed(params.seed)
    train_idx, val_idx = stratified_split(dataset.y_train, params.validation_fraction, params.split_seed)
    x_train, y_train = with_moved_copies(dataset.x_train[train_idx], dataset.y_train[train_idx], params)
    x_train = to_model_input(relit(x_train, params.relight, params.seed))
    x_val, y_val = to_model_input(dataset.x_train[val_idx]), dataset.y_train[val_idx]

    steps_per_epoch = -(-len(x_train) // params.batch_size)
    learning_rate = learning_rate_schedule(params, steps_per_epoch)
    moments = float(x_train.mean()), float(max(x_train.std(), 1e-3))  # what the network is fed
    classes = len(dataset.class_names)
    model = build_lenet5(
        classes, learning_rate, params.weight_decay, params.architecture, moments, params.flip, params.mixed_precision
    )
    callbacks: list[keras.callbacks.Callback] = []
    if params.schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=params.lr_factor, patience=params.lr_patience, min_lr=1e-5
            )
        )
    callbacks.append(
        keras.callbacks.EarlyStopping(monitor=params.monitor, patience=params.patience, restore_best_weights=True)
    )
    callbacks.extend(extra_callbacks)
    if params.augment:
        batches = {"x": augmented_batches(x_train, y_train, params.batch_size, params.seed), "shuffle": False}
    else:
        batches = {"x": x_train, "y": y_train, "batch_size": params.batch_size, "shuffle": True}
    fit = model.fit(**batches, validation_data=(x_val, y_val), epochs=params.epochs, callbacks=callbacks, verbose=0)
    history = {key: [float(v) for v in values] for key, values in fit.history.items()}
    epochs_run = len(history["loss"])
    if params.flip or params.mixed_precision:
        model = inference_copy(model, classes, params.architecture, moments)
    scores = history[params.monitor]
    best_epoch = int(np.argmin(scores) if params.monitor == "val_loss" else np.argmax(scores))
    return TrainResult(model, history, best_epoch, epochs_run)


def epoch_line(epoch: int, epochs: int, logs: dict, elapsed: float, bar: bool = False) -> str:
    """One console line per epoch. The time left is an upper bound: early stopping may end sooner."""
    done = epoch + 1
    left = elapsed / done * (epochs - done)
    progress = f"{'█' * round(20 * done / epochs):░<20} " if bar else ""
    return (
        f"epoch {done}/{epochs} {progress}loss {logs['loss']:.4f} acc {logs['accuracy']:.4f} "
        f"val_loss {logs['val_loss']:.4f} val_acc {logs['val_accuracy']:.4f} | "
        f"{elapsed / done:.1f} s/epoch, at most {left // 60:.0f} min {left % 60:02.0f} s left"
    )


def run_callbacks(epochs: int) -> list:
    """For training inside `tracked_run`: MLflow's own Keras callback logs each epoch's metrics into
    the active run as they happen, and the Prefect log gets one line per epoch (with a bar when the
    console is a terminal), so a long run can be followed in either UI."""
    import keras
    from mlflow.keras import MlflowCallback

    class EpochMetrics(MlflowCallback):
        def on_test_end(self, logs: dict | None = None) -> None:
            """Skipped: validation metrics already arrive with each epoch's (val_loss, val_accuracy)."""

    logger = get_run_logger()
    started = time.monotonic()
    bar = sys.stderr.isatty()

    def log_epoch(epoch: int, logs: dict) -> None:
        logger.info(epoch_line(epoch, epochs, logs, time.monotonic() - started, bar))

    return [EpochMetrics(), keras.callbacks.LambdaCallback(on_epoch_end=log_epoch)]


@task(
    name="train",
    task_run_name="train-lr={params.learning_rate}-bs={params.batch_size}-epochs={params.epochs}",
    cache_policy=NO_CACHE,
)
def train_task(dataset: Dataset, params: TrainParams, run_id: str) -> TrainResult:
    """The pipeline's training stage: params, curves and timings on the pipeline's MLflow run."""
    logger = get_run_logger()
    client = MlflowClient()
    client.log_batch(run_id, params=[Param(f"train.{k}", str(v)) for k, v in params.flat().items()])
    started = time.perf_counter()
    result = train_model(dataset, params, run_callbacks(params.epochs))
    seconds = time.perf_counter() - started
    for key, value in {
        "train_seconds": seconds,
        "best_epoch": result.best_epoch + 1,
        "epochs_run": result.epochs_run,
        "best_val_accuracy": result.history["val_accuracy"][result.best_epoch],
    }.items():
        client.log_metric(run_id, key, value)
    with tempfile.TemporaryDirectory() as tmp:
        client.log_artifact(
            run_id, str(plot_training_curves(result.history, Path(tmp) / "training_curves.png")), "plots"
        )
    logger.info("trained %d epochs in %.1f s (best epoch %d)", result.epochs_run, seconds, result.best_epoch + 1)
    return result
