"""Training a multi-task network: the library behind `tools.train` (the original's train.py).

Wires a zoo family (`deeplab_ext.models`), the data (`deeplab_ext.data`), the run's tasks
and training-only branches (`deeplab_ext.tasks`) and the model-agnostic multi-task
machinery (`tf_mtl`): a loss weighting, poly LR, momentum SGD, mixed precision, a
tf.distribute strategy, TensorBoard summaries from inside the step, and checkpoints that
training resumes from (training-only heads and terms included).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import pathlib
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from deeplab_ext.data import colormap as cmap
from deeplab_ext.data import input_pipeline
from deeplab_ext.data.datasets import DatasetInfo, get_dataset_info
from deeplab_ext.models.registry import ModelFamily, build_network, get_variant, group_variables
from deeplab_ext.run.callbacks import FiniteGuard, ProgressCallback, SaverCallback
from deeplab_ext.run.importing import check_coverage, initial_weights, local_source
from deeplab_ext.run.locking import directory_lock
from deeplab_ext.run.options import TrainOptions
from deeplab_ext.run.rundir import (
    MODEL_CONFIG_FILE,
    latest_checkpoint,
    save_run_config,
)
from deeplab_ext.tasks import (
    Branch,
    TaskContext,
    branch_record,
    build_branches,
    build_tasks,
    targets_of,
    task_pictures,
)
from deeplab_ext.tasks import task_names as network_task_names
from tf_mtl import distribute, precision
from tf_mtl.model import MultiTaskModel
from tf_mtl.schedules import get_learning_rate_schedule
from tf_mtl.weighting import get_weighting, parse_weighting_options, weighting_class

__all__ = ["TrainResult", "build_multitask_model", "model_config_for", "train"]


def model_config_for(options: TrainOptions, info: DatasetInfo) -> tuple[ModelFamily, Any]:
    """(family, config): the variant, the flag overrides, and the dataset's class/tag counts."""
    family, cfg = get_variant(
        options.model_variant,
        output_stride=options.output_stride,
        decoder_output_stride=options.decoder_output_stride,
        weight_decay=options.weight_decay,
        sync_batch_norm=options.sync_batch_norm or None,
        tag_head_hidden=options.tag_head_hidden,
        tag_head_pooling=options.tag_head_pooling,
        tag_head=options.tag_head, seg_tag_pooling=options.seg_tag_pooling,
        seg_tag_temperature=options.seg_tag_temperature,
        atrous_rates=None if options.atrous_rates is None else tuple(options.atrous_rates),
    )
    cfg = cfg.for_dataset(info.num_classes, info.num_tags, info.tag_class_ids)
    return family, cfg.replace(num_tags=options.num_tags)


def overlay_fn(info: DatasetInfo, semantic_key: str = "semantic",
               max_images: int = 3, label_maps: tuple[str, ...] = (),
               pictures: dict | None = None) -> Callable:
    """Image summaries: input | ground truth | prediction (| each training-only head's label
    map, e.g. the label-decoder path), colourised; and per task that draws its dense
    output (``pictures``: :func:`deeplab_ext.tasks.task_pictures`), input | target |
    prediction."""
    colors = tf.constant(cmap.create_label_colormap(info.colormap), tf.uint8)

    def colourise(labels: tf.Tensor) -> tf.Tensor:
        labels = tf.clip_by_value(tf.cast(labels, tf.int32), 0, colors.shape[0] - 1)
        return tf.gather(colors, labels)

    def fn(x, y, outputs):
        images = tf.cast(tf.clip_by_value(x[:max_images], 0, 255), tf.uint8)
        size = tf.shape(images)[1:3]
        panels = [images, colourise(y["semantic"][:max_images])]
        for key in (semantic_key, *label_maps):
            logits = tf.image.resize(tf.cast(outputs[key][:max_images], tf.float32), size)
            panels.append(colourise(tf.argmax(logits, axis=-1)))
        out = {"overlay": tf.concat(panels, axis=2)}
        for task, (output, target, draw) in (pictures or {}).items():
            out[task] = tf.concat([images, draw(outputs[output][:max_images],
                                                y[target][:max_images])], axis=2)
        return out

    return fn


def make_optimizer(options: TrainOptions) -> keras.optimizers.Optimizer:
    kw = dict(
        learning_power=options.learning_power,
        training_number_of_steps=options.training_number_of_steps,
        slow_start_step=options.slow_start_step,
        slow_start_learning_rate=options.slow_start_learning_rate,
    )
    if options.learning_policy == "step":
        kw = dict(
            learning_rate_decay_step=options.learning_rate_decay_step,
            learning_rate_decay_factor=options.learning_rate_decay_factor,
            slow_start_step=options.slow_start_step,
            slow_start_learning_rate=options.slow_start_learning_rate,
        )
    schedule = get_learning_rate_schedule(options.learning_policy, options.base_learning_rate, **kw)
    if options.optimizer == "momentum":
        opt = keras.optimizers.SGD(schedule, momentum=options.momentum)
    elif options.optimizer == "adam":
        opt = keras.optimizers.Adam(schedule)
    else:
        raise ValueError(f"--optimizer={options.optimizer!r}: use momentum or adam")
    return precision.wrap_optimizer(opt)


def freeze_batch_norm(network: keras.Model) -> int:
    """--fine_tune_batch_norm=false: BN layers frozen (inference mode in Keras 3)."""
    n = 0
    for layer in network._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            n += 1
    return n


def freeze_all_but(network: keras.Model, groups: tuple[str, ...]) -> int:
    """--train_groups: every layer outside the named variable groups stops training
    (BatchNorm in it then runs in inference mode, as Keras 3 does for frozen layers)."""
    keep = {id(v) for v in group_variables(network, groups, flag="--train_groups")}
    frozen = 0
    for layer in network.layers:
        if layer.trainable_weights and not any(id(v) in keep for v in layer.trainable_weights):
            layer.trainable = False
            frozen += 1
    return frozen


@dataclasses.dataclass
class TrainResult:
    final_step: int
    resumed_from: int
    checkpoint: str | None
    logs: dict


def num_examples(dataset_dir: str, split: str) -> int:
    """Records in the split's shards (one pass over them)."""
    files = input_pipeline.list_shards(dataset_dir, split)
    return int(tf.data.TFRecordDataset(files).reduce(np.int64(0), lambda n, _: n + 1))


def method_options(options: TrainOptions, dataset_dir: str | None = None
                   ) -> dict[str, Any]:
    """The loss weighting's options, resolved once: ``--weighting_options`` (checked where
    the method declares them), the old flags ``--initial_sigma`` and ``--dwa_window_steps``
    as aliases of its ``initial_sigma`` / ``window_steps``, and the option a method fills
    with one pass over the training split (``LossWeighting.epoch_option``, when 0) counted
    from ``dataset_dir``."""
    resolved = parse_weighting_options(options.loss_weighting, options.weighting_options)
    given = options.weighting_options
    for flag, key, default in (("--initial_sigma", "initial_sigma", 1.0),
                               ("--dwa_window_steps", "window_steps", 0)):
        value = getattr(options, flag[2:])
        if value == default or key not in resolved:
            continue
        if f"{key}=" in given:
            raise ValueError(f"{flag}={value} and --weighting_options={given}: give "
                             f"{key} once (the flag is an alias of the option)")
        resolved[key] = parse_weighting_options(options.loss_weighting, {key: value})[key]
    epoch = getattr(weighting_class(options.loss_weighting), "epoch_option", None)
    if epoch and not resolved.get(epoch) and dataset_dir is not None:
        resolved[epoch] = math.ceil(num_examples(dataset_dir, options.train_split)
                                    / options.train_batch_size)
    return resolved


def build_multitask_model(
    network: keras.Model, family: ModelFamily, info: DatasetInfo, options: TrainOptions,
    *, branch: Branch | None = None, summary_writer: Any = None,
    image_summary_fn: Callable | None = None, resolved: dict[str, Any] | None = None,
) -> MultiTaskModel:
    """The compiled MultiTaskModel of a run: the network's tasks (+ a branch's), the loss
    weighting (``resolved``: its options from :func:`method_options`) and the optimizer of
    ``options``."""
    branch = branch or Branch()
    ctx = TaskContext(network, family, info, options)
    tasks = build_tasks(ctx) + branch.tasks
    resolved = dict(method_options(options) if resolved is None else resolved)
    if "rep_features" in resolved and "rep_features=" not in options.weighting_options:
        names = {layer.name for layer in network.layers}
        shared = [f for f in family.shared_features if f in names]
        if shared:
            resolved["rep_features"] = "+".join(shared)
        elif resolved.get("rep_grad"):
            raise ValueError(f"--weighting_options=rep_grad=true: family {family.name!r} "
                             "names no shared features; add rep_features=NAME[+NAME] (a "
                             f"cut every task's gradient passes: {family.feature_names})")
    model = MultiTaskModel(
        network, tasks, get_weighting(options.loss_weighting, tasks, resolved),
        loss_terms=branch.loss_terms, heads=branch.heads, summary_writer=summary_writer,
        summary_every_n_steps=options.save_summaries_steps, image_summary_fn=image_summary_fn,
        gradient_multipliers=_last_layer_multipliers(network, family, options),
    )
    model.compile(optimizer=make_optimizer(options))
    return model


LAST_LAYERS = ("logits",)  # the original's last layers: the classifier


def _last_layer_multipliers(network: keras.Model, family: ModelFamily,
                            options: TrainOptions) -> dict[str, float]:
    """``--last_layer_gradient_multiplier`` as {variable path: factor} (none at 1)."""
    factor = options.last_layer_gradient_multiplier
    if not (np.isfinite(factor) and factor > 0):
        raise ValueError(f"--last_layer_gradient_multiplier must be a finite number > 0, got "
                         f"{factor}")
    if factor == 1.0:
        return {}
    missing = [g for g in LAST_LAYERS if g not in family.variable_groups]
    if missing:
        raise ValueError(f"--last_layer_gradient_multiplier: model family {family.name!r} has "
                         f"no {', '.join(missing)} group")
    return {v.path: factor for v in group_variables(network, LAST_LAYERS)}


def restore_training(ckpt: tf.train.Checkpoint, path: str) -> None:
    """Resume from ``path``: another run's checkpoint, or a damaged one, is an error
    naming it (never a traceback, never training on from half-restored state)."""
    try:
        ckpt.restore(path).assert_existing_objects_matched()
    except Exception as e:  # noqa: BLE001 - TF raises several types for damaged files
        raise ValueError(f"cannot resume from {path} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200] if str(e) else 'damaged'}): it was "
                         "written by another model or run setup, or is damaged. Use a new "
                         "--train_logdir, or remove the damaged checkpoint") from e


def train(options: TrainOptions, printer: Callable[[str], None] = print,
          branch: Branch | None = None) -> TrainResult:
    """Train (or resume) a network; checkpoints + TensorBoard in `train_logdir`.

    ``branch`` adds training-only heads / loss terms / tasks to those named by
    ``options.training_branches``.
    """
    # First: a multi-worker strategy configures collective ops, which must happen before
    # TensorFlow runs anything (reading the shards does).
    strategy = distribute.get_strategy(options.distribution_strategy, options.num_gpus)
    # Every worker saves (saving may need collectives), only the chief into the run
    # directory; the others into a folder of their own, removed at the end. All restore
    # from the run directory.
    chief = distribute.is_chief(strategy)
    save_dir = None if chief else pathlib.Path(tempfile.mkdtemp(prefix="worker-"))
    try:
        with contextlib.ExitStack() as stack:
            return _train(options, printer, branch, strategy, save_dir, stack)
    finally:
        if save_dir is not None:
            shutil.rmtree(save_dir, ignore_errors=True)


def _train(options: TrainOptions, printer: Callable[[str], None], branch: Branch | None,
           strategy: tf.distribute.Strategy, save_dir: pathlib.Path | None,
           stack: contextlib.ExitStack) -> TrainResult:
    """:func:`train` under ``strategy``; ``save_dir``: a non-chief worker's own folder;
    ``stack`` holds the run directory's lock until training ends. The steps: check and
    prepare the run, build (and resume) the model, record the run directory, stream the
    input from where the checkpoint stopped, fit."""
    chief = save_dir is None
    run = _prepare(options, printer, stack if chief else None)
    with strategy.scope():
        built = _build(options, run, branch, save_dir or run.logdir, printer)
    if chief:
        save_run_config(run.logdir, run.family, run.cfg, run.info, {
            "train_crop_size": list(run.crop), "min_resize_value": options.min_resize_value,
            "max_resize_value": options.max_resize_value,
            "training_branches": branch_record(options, options.training_branches),
            "loss_weighting": {"method": options.loss_weighting,
                               "options": options.weighting_options}})
    total = options.training_number_of_steps
    if built.resumed_from >= total:
        printer(f"Already trained for {built.resumed_from} >= {total} steps; nothing to do.")
        return TrainResult(built.resumed_from, built.resumed_from,
                           built.manager.latest_checkpoint, {})
    dataset = _input(options, run, built)
    return _fit(options, run, built, dataset, strategy, printer)


@dataclasses.dataclass
class _Run:
    """What a run is, before anything is built: its dataset, model config, crop, seed."""

    info: DatasetInfo
    family: ModelFamily
    cfg: Any
    logdir: pathlib.Path
    crop: tuple[int, int]
    seed: int | None
    method_options: dict[str, Any]


@dataclasses.dataclass
class _Built:
    """The model of a run, its checkpoint manager and the step it resumed from."""

    network: keras.Model
    model: MultiTaskModel
    branch: Branch
    writer: Any
    manager: tf.train.CheckpointManager
    resumed_from: int


def _prepare(options: TrainOptions, printer: Callable[[str], None],
             stack: contextlib.ExitStack | None) -> _Run:
    """Check the options and the shards, take the run directory's lock (``stack``: the
    chief's), seed everything and set the precision policy."""
    if options.training_number_of_steps < 1:
        raise ValueError(f"--training_number_of_steps must be >= 1, got "
                         f"{options.training_number_of_steps}")
    resolved = method_options(options)  # fail early, before the shards are counted
    info = get_dataset_info(options.dataset)
    logdir = pathlib.Path(options.train_logdir)
    family, cfg = model_config_for(options, info)
    crop = tuple(int(c) for c in options.train_crop_size)
    # Shards of another dataset would train silently wrong: refuse before building anything.
    input_pipeline.check_shards_match(info, options.dataset_dir, options.train_split)
    resolved = method_options(options, options.dataset_dir)
    epoch = getattr(weighting_class(options.loss_weighting), "epoch_option", None)
    if epoch:
        printer(f"--loss_weighting={options.loss_weighting}: {epoch}={resolved[epoch]} (steps "
                "of one pass over the training split unless given)")
    if stack is not None:  # one writer per run directory (the chief: the others write elsewhere)
        stack.enter_context(directory_lock(logdir, "--train_logdir", printer=printer))
    _check_same_method(options, logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    seed = options.seed
    if options.deterministic:
        seed = 0 if seed is None else seed
        tf.config.experimental.enable_op_determinism()
        printer(f"--deterministic: op determinism on, seed {seed}")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    precision.set_policy(options.mixed_precision)
    return _Run(info, family, cfg, logdir, crop, seed, resolved)


def _check_same_method(options: TrainOptions, logdir: pathlib.Path) -> None:
    """A resumed run keeps the loss weighting it was trained with: another one would drop
    the method's state (its weights, momenta, windows) and go on as a different run."""
    record = logdir / MODEL_CONFIG_FILE
    if not record.is_file() or latest_checkpoint(logdir, "--train_logdir") is None:
        return
    before = json.loads(record.read_text()).get("loss_weighting")
    if before is None:  # a run recorded before the method was
        return
    now = {"method": options.loss_weighting, "options": options.weighting_options}
    if before != now:
        raise ValueError(
            f"--loss_weighting={now['method']} --weighting_options={now['options']!r}: "
            f"{logdir} was trained with --loss_weighting={before['method']} "
            f"--weighting_options={before['options']!r}; resuming with another would drop "
            "its state and go on as another run. Resume with those, or train into a new "
            "--train_logdir")


def _initialise(network: keras.Model, options: TrainOptions, family: ModelFamily,
                printer: Callable[[str], None]) -> None:
    """--tf_initial_checkpoint (its coverage checked), then the freezing flags."""
    if options.tf_initial_checkpoint:
        source, _ = local_source(options.tf_initial_checkpoint, "--tf_initial_checkpoint",
                                 printer)
        report, folded = initial_weights(
            network, source, initialize_last_layer=options.initialize_last_layer)
        printer(report.summary())
        frozen = () if not options.train_groups else tuple(
            g for g in family.variable_groups if g not in options.train_groups)
        check_coverage(network, report, "--tf_initial_checkpoint", frozen=frozen,
                       allow_partial=options.allow_partial_init, printer=printer)
        if folded and options.fine_tune_batch_norm:
            raise ValueError(
                f"--tf_initial_checkpoint={options.tf_initial_checkpoint} carries BatchNorm "
                "folded into its convolutions (a TFLite export): its BatchNorm statistics "
                "are not those of any data, and training them would undo the fold. Add "
                "--fine_tune_batch_norm=false.")
    if not options.fine_tune_batch_norm:
        printer(f"--fine_tune_batch_norm=false: froze {freeze_batch_norm(network)} BN layers")
    if options.train_groups:
        frozen = freeze_all_but(network, options.train_groups)
        printer(f"--train_groups={','.join(options.train_groups)}: froze {frozen} layers")


def _build(options: TrainOptions, run: _Run, branch: Branch | None, save_dir: pathlib.Path,
           printer: Callable[[str], None]) -> _Built:
    """Network, initial weights, branches, the compiled model; resumed from the run
    directory's latest checkpoint when there is one (under the strategy's scope)."""
    network = build_network(run.cfg, input_shape=(run.crop[0], run.crop[1], 3))
    _initialise(network, options, run.family, printer)
    ctx = TaskContext(network, run.family, run.info, options)
    branch = build_branches(ctx, options.training_branches) + (branch or Branch())
    writer = tf.summary.create_file_writer(str(save_dir / "train"))
    model = build_multitask_model(
        network, run.family, run.info, options, branch=branch, summary_writer=writer,
        image_summary_fn=(overlay_fn(run.info, run.family.semantic_output,
                                     label_maps=branch.label_maps,
                                     pictures=task_pictures(network, run.family))
                          if options.save_summaries_images else None),
        resolved=run.method_options)
    model.optimizer.build(model.trainable_variables)
    ckpt = model.make_checkpoint()
    manager = tf.train.CheckpointManager(
        ckpt, str(save_dir), max_to_keep=options.max_checkpoints_to_keep
    )
    resumed_from = 0
    latest = latest_checkpoint(run.logdir, "--train_logdir")
    if latest:
        restore_training(ckpt, latest)
        resumed_from = int(model.optimizer.iterations.numpy())
        printer(f"Resuming from {latest} (step {resumed_from}).")
    return _Built(network, model, branch, writer, manager, resumed_from)


def _input(options: TrainOptions, run: _Run, built: _Built) -> tf.data.Dataset:
    """The training stream, with the targets the tasks and branches read; a seeded stream
    continues where the checkpoint stopped (an unseeded one is random either way, and
    skipping reads every record it skips)."""
    targets = targets_of(network_task_names(built.network, run.family)) + built.branch.targets
    return input_pipeline.make_dataset(
        run.info, options.dataset_dir, options.train_split,
        crop_size=run.crop, batch_size=options.train_batch_size, is_training=True,
        min_scale_factor=options.min_scale_factor, max_scale_factor=options.max_scale_factor,
        scale_factor_step_size=options.scale_factor_step_size,
        min_resize_value=options.min_resize_value, max_resize_value=options.max_resize_value,
        seed=run.seed, targets=tuple(dict.fromkeys(targets)),
        skip_examples=(built.resumed_from * options.train_batch_size
                       if run.seed is not None else 0),
    )


def _fit(options: TrainOptions, run: _Run, built: _Built, dataset: tf.data.Dataset,
         strategy: tf.distribute.Strategy, printer: Callable[[str], None]) -> TrainResult:
    """Keras fit in chunks of --save_interval_steps (a checkpoint after each)."""
    total = options.training_number_of_steps
    remaining = total - built.resumed_from
    chunk = max(1, min(options.save_interval_steps, remaining))
    epochs = math.ceil(remaining / chunk)
    crop = run.crop
    printer(
        f"Training {run.cfg.name} ({built.network.count_params():,} params) on "
        f"{run.info.name}:{options.train_split} for {remaining} steps, batch "
        f"{options.train_batch_size}, crop {crop[0]}x{crop[1]}, "
        f"weighting={options.loss_weighting}, precision={options.mixed_precision}, "
        f"strategy={options.distribution_strategy} ({strategy.num_replicas_in_sync} "
        f"replicas). Logs: {run.logdir}"
    )
    guard = FiniteGuard()
    history = built.model.fit(
        dataset,
        steps_per_epoch=chunk,
        epochs=epochs,
        shuffle=False,  # the tf.data pipeline shuffles
        verbose=0,
        callbacks=[
            ProgressCallback(total, options.log_every_n_steps, printer),
            guard,
            SaverCallback(built.manager, options.save_interval_steps, guard, built.network),
        ],
    )
    built.writer.flush()
    if guard.bad_step is not None:
        kept = built.manager.latest_checkpoint
        raise RuntimeError(
            f"training diverged at step {guard.bad_step} (loss {guard.value}, or weights not "
            f"finite): stopped, nothing of it saved; "
            + (f"the last finite checkpoint is {kept}" if kept else "no checkpoint was written")
            + ". Lower --base_learning_rate (or clip the task weights), then train again")
    final = int(built.model.optimizer.iterations.numpy())
    logs = {k: float(np.asarray(v[-1])) for k, v in history.history.items() if v}
    printer(f"Done at step {final}; checkpoint {built.manager.latest_checkpoint}")
    return TrainResult(final, built.resumed_from, built.manager.latest_checkpoint, logs)
