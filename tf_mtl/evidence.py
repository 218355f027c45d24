"""Evidence at prediction time: refit to an image's tags, then segment.

Given an image and its image-level tags (the *evidence*), back-propagate the tag
head's loss against the tags into the trunk and tag branch, keep the segmentation
decoder fixed, and predict the segmentation with the adjusted network. Every image
starts again from the trained weights. Model-agnostic: works on any Keras network
that follows the contract in ARCHITECTURE.md (input images ``[B, H, W, 3]``; output
dict with ``"semantic"`` logits ``[B, H, W, C]`` and ``"tags"`` logits ``[B, T]``;
identity layer ``"encoder"``).

Modes (``EvidenceConfig.mode``):
  * ``"weights"`` (DL-BP-L2 / DL-BP-ES): K gradient steps of
    ``BCE(tags_logits(x), tags) + alpha * ||W - W*||^2`` on the chosen variables
    only. The weights are *loop state* of a ``tf.while_loop`` fed to
    ``model.stateless_call``; the model's variables are never assigned, so the
    model is bit-identical afterwards, concurrent calls are safe and the whole
    function exports to a SavedModel. Each image of a batch is refitted
    independently (``tf.map_fn``) from the trained weights.
  * ``"latent"``: optimise an additive offset ``delta`` on the output of
    ``latent_layer`` (``"encoder"``) with ``BCE + alpha * ||delta||^2``. The
    network is split there by :func:`split_at`; the per-image losses are summed,
    so a batch is refitted in one go with independent per-image gradients.

Pruning (``-Pr``): :func:`prune_probabilities` zeroes classes absent from the tags
(background kept); usable alone or after refitting (``EvidenceConfig.prune``).

Outputs of :meth:`EvidenceRefitter.__call__` (dict of tensors):
  ``probabilities`` [B,H,W,C] float32 (after pruning if enabled), ``predictions``
  [B,H,W] int32 (argmax), ``tag_probabilities_before`` / ``tag_probabilities_after``
  [B,T] float32, ``steps_taken`` [B] int32 (optimizer updates applied per image),
  ``fell_back`` [B] bool (``EvidenceConfig.safeguard``: the image got the unrefitted
  prediction because the refit did not help its evidence, see :func:`refit_hurt`).

Optimizers are functional (state as loop variables, ``tf_mtl.functional_optimizers``)
and follow ``keras.optimizers.SGD`` / ``keras.optimizers.Adam`` update rules exactly.
Graph surgery (the latent split, upstream layers) lives in ``tf_mtl.graph``.

Mixed precision: the refitted values are float32 master copies (the variables'
float32 values; layers autocast to float16), and the loss is multiplied by a
dynamic loss scale (starting at ``loss_scale``, halved and the step skipped on
non-finite gradients). Under float32 no scaling is applied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tf_mtl.functional_optimizers import OPTIMIZERS, FunctionalOptimizer
from tf_mtl.graph import frozen_prefix, output_tensor, split_at, upstream_layers
from tf_mtl.inference import multi_scale_probabilities, network_logits_fn, validate_scales

# Which variables to refit: variables | layer names | predicate(variable path) | None.
VariableSpec = Sequence[Any] | Callable[[str], bool] | None

_MODES = ("weights", "latent")


# --------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class EvidenceConfig:
    """Hyper-parameters of prediction-time refitting (validated on construction).

    Its defaults are the tools' too (``deeplab_ext.run.options.EvidenceOptions`` reads
    them from here): the seed's DL-BP-L2 (10 SGD steps, L2 weight 1e-3), with the
    serving safeguard on."""

    steps: int = 10
    learning_rate: float = 0.01
    optimizer: str = "sgd"  # "sgd" | "adam"
    alpha: float = 1e-3  # L2 to the trained weights (weights) / on delta (latent)
    early_stopping: bool = False  # stop once all tags agree with the evidence
    clip_norm: float = 0.0  # > 0: clip each step's gradient to this global norm (per image)
    threshold: float = 0.5  # decision threshold on tag probabilities
    # Early stopping needs every tag on its evidence side of the threshold by this much
    # (present: p >= threshold + margin, absent: p < threshold - margin); 0 = plain agreement.
    margin: float = 0.0
    mode: str = "weights"  # "weights" | "latent"
    latent_layer: str = "encoder"
    jit_compile: bool = False  # XLA; slower on CPU, so off by default
    loss_scale: float = 2.0**15  # initial dynamic loss scale under mixed_float16
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    eval_scales: tuple[float, ...] = (1.0,)
    add_flipped_images: bool = False
    prune: bool = False
    keep_classes: tuple[int, ...] = (0,)
    # Per image, fall back to the unrefitted prediction when the refit did not lower the
    # evidence loss or flipped a tag that agreed with the evidence (refit_hurt).
    safeguard: bool = True
    # Weights mode: weight of a term that keeps what pruning already gets right, the mean
    # per-pixel cross-entropy of the refitted softmax to the unrefitted one pruned to the
    # tagged (and kept) classes. 0 = off. Needs tag_class_ids.
    anchor: float = 0.0

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ValueError:
            value = getattr(self, field)
            return ValueError(f"EvidenceConfig.{field}={value!r}: {why}")

        if not isinstance(self.steps, (int, np.integer)) or self.steps < 0:
            raise bad("steps", "must be an integer >= 0 (0 = plain inference)")
        if not self.learning_rate > 0:
            raise bad("learning_rate", "must be > 0")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"must be one of {OPTIMIZERS}")
        if self.alpha < 0:
            raise bad("alpha", "must be >= 0")
        if self.clip_norm < 0:
            raise bad("clip_norm", "must be >= 0 (0 = no clipping)")
        if not 0.0 < self.threshold < 1.0:
            raise bad("threshold", "must be in (0, 1)")
        if not 0.0 <= self.margin < min(self.threshold, 1.0 - self.threshold):
            raise bad("margin", f"must be in [0, {min(self.threshold, 1.0 - self.threshold):g}) "
                      f"so both sides of threshold={self.threshold:g} stay reachable")
        if self.mode not in _MODES:
            raise bad("mode", f"must be one of {_MODES}")
        if not self.loss_scale > 0:
            raise bad("loss_scale", "must be > 0")
        if self.anchor < 0:
            raise bad("anchor", "must be >= 0 (0 = off)")
        if self.anchor > 0 and self.mode != "weights":
            raise bad("anchor", "is a term of the weights mode only")
        object.__setattr__(self, "eval_scales", validate_scales(self.eval_scales))
        object.__setattr__(self, "keep_classes", tuple(int(c) for c in self.keep_classes))


# ----------------------------------------------------------------------- validation
def validate_evidence(
    tags: Any,
    num_tags: int,
    *,
    batch_size: int | None = None,
    steps: Any = None,
    name: str = "tags",
    steps_name: str = "steps",
) -> np.ndarray:
    """Check evidence in Python before any graph runs; return float32 ``[B, T]``.

    Tools call this with their flag names (``name``, ``steps_name``) so the error
    says which flag to fix. Mapping class *names* to tags is the data side's job.
    """
    arr = np.asarray(tags)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
    ):
        raise ValueError(f"{name}: expected a numeric 0/1 multi-hot tag vector, got {tags!r}")
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[-1] != num_tags:
        raise ValueError(
            f"{name}: expected {num_tags} tag values per image (shape [{num_tags}] or "
            f"[batch, {num_tags}], one 0/1 per tag; tag i is class tag_class_ids[i]), "
            f"got shape {list(np.shape(tags))}. Fix: pass a multi-hot vector of length "
            f"{num_tags} (the model's tag head size)."
        )
    arr = arr.astype(np.float32)
    bad = ~np.isin(arr, (0.0, 1.0))
    if bad.any():
        where = np.argwhere(bad)[0].tolist()
        raise ValueError(
            f"{name}: tag values must be 0 or 1, got {float(arr[tuple(where)])} at index {where}. "
            "Fix: pass hard multi-hot evidence (1 = class present, 0 = absent)."
        )
    if batch_size is not None and arr.shape[0] != batch_size:
        raise ValueError(
            f"{name}: {arr.shape[0]} tag vectors for {batch_size} images. "
            "Fix: pass one tag vector per image."
        )
    if steps is not None:
        s = np.asarray(steps)
        if s.ndim != 0 or not np.issubdtype(s.dtype, np.integer) or int(s) < 0:
            raise ValueError(
                f"{steps_name}: must be an integer >= 0 (0 = plain inference), got {steps!r}."
            )
    return arr


# ------------------------------------------------------------------------- pruning
def prune_probabilities(
    probs: Any,
    tags: Any,
    tag_class_ids: Sequence[int],
    keep_classes: Sequence[int] = (0,),
    renormalize: bool = True,
) -> tf.Tensor:
    """Zero the probability of every class not present in the tags ("Pr").

    Class ``c`` survives iff ``c in keep_classes`` (background) or it is the class of
    a tag that is 1. ``renormalize`` rescales the kept probabilities to sum to 1
    (argmax is unaffected). The class map is ``argmax`` of the result.

    Args:
      probs: ``[B, H, W, C]`` probabilities.
      tags: ``[B, T]`` 0/1 evidence.
      tag_class_ids: tag ``i`` is class ``tag_class_ids[i]``.
    """
    probs = tf.convert_to_tensor(probs, tf.float32)
    tags = tf.convert_to_tensor(tags, tf.float32)
    num_classes = probs.shape[-1]
    ids = [int(c) for c in tag_class_ids]
    if num_classes is not None:
        bad = [c for c in list(ids) + list(keep_classes) if not 0 <= c < num_classes]
        if bad:
            raise ValueError(
                f"tag_class_ids/keep_classes {bad} out of range for {num_classes} classes"
            )
    if tags.shape[-1] is not None and tags.shape[-1] != len(ids):
        raise ValueError(
            f"tags has {tags.shape[-1]} entries but tag_class_ids has {len(ids)}"
        )
    depth = num_classes if num_classes is not None else tf.shape(probs)[-1]
    # [T, C] one-hot of each tag's class; tags @ onehot -> presence per class [B, C].
    onehot = tf.one_hot(ids, depth, dtype=tf.float32)
    present = tf.matmul(tf.reshape(tags, [-1, len(ids)]), onehot) > 0.5
    keep = tf.reduce_sum(tf.one_hot(list(keep_classes), depth, dtype=tf.float32), 0) > 0.5
    mask = tf.cast(tf.logical_or(present, keep[None]), tf.float32)  # [B, C]
    out = probs * mask[:, None, None, :]
    if renormalize:
        total = tf.reduce_sum(out, axis=-1, keepdims=True)
        out = tf.math.divide_no_nan(out, total)
    return out


# ------------------------------------------------------------------ variable choice
def select_variables(network: keras.Model, spec: VariableSpec = None, tags_key: str = "tags") -> list:
    """Resolve which variables to refit.

    ``spec`` may be: ``None`` (every trainable variable upstream of the tags output:
    trunk + tag branch, decoder excluded), a list of variables (e.g.
    ``groups["backbone"] + groups["aspp"] + groups["tag_head"]`` from
    ``deeplab_ext.models.variable_groups``), a list of layer names, or a predicate
    on variable paths (``lambda path: not path.startswith("decoder")``).
    Only trainable variables are refitted: BatchNorm moving statistics in an
    explicit list are dropped (they stay at their trained values).
    """
    if spec is None:
        found: dict[int, Any] = {}
        for layer in upstream_layers(network, tags_key):
            for v in layer.trainable_variables:
                found[id(v)] = v
        return [v for v in network.trainable_variables if id(v) in found]
    if callable(spec):
        chosen = [v for v in network.trainable_variables if spec(v.path)]
        if not chosen:
            raise ValueError("variable predicate matched no variable of the network")
        return chosen
    spec = list(spec)
    if spec and all(isinstance(s, str) for s in spec):
        chosen = []
        for name in spec:
            try:
                chosen.extend(network.get_layer(name).trainable_variables)
            except ValueError as err:
                raise ValueError(f"refit layer {name!r} not found in network") from err
        return chosen
    known = {id(v) for v in network.variables}
    for v in spec:
        if id(v) not in known:
            raise ValueError(f"variable {getattr(v, 'path', v)!r} does not belong to the network")
    trainable = {id(v) for v in network.trainable_variables}
    return [v for v in spec if id(v) in trainable]



def _is_mixed(network: keras.Model) -> bool:
    return any(
        getattr(layer, "compute_dtype", "float32") in ("float16", "bfloat16")
        for layer in network.layers
    )


def _all_finite(ts: list[tf.Tensor]) -> tf.Tensor:
    if not ts:
        return tf.constant(True)
    return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(g)) for g in ts]))


def agrees_with_evidence(
    probs: tf.Tensor, tags: tf.Tensor, threshold: float, margin: float = 0.0
) -> tf.Tensor:
    """Per image: every tag probability on its evidence side of ``threshold`` by ``margin``.

    The early-stopping test. A margin > 0 keeps refitting an image whose tags agree only
    barely (an absent class at p = 0.45 may still own pixels of the segmentation).
    """
    present = tags >= 0.5
    ok = tf.where(present, probs >= threshold + margin, probs < threshold - margin)
    return tf.reduce_all(ok, axis=-1)


def refit_hurt(before: tf.Tensor, after: tf.Tensor, tags: tf.Tensor, taken: tf.Tensor,
               threshold: float = 0.5) -> tf.Tensor:
    """Per image ``[B]``: the refit took steps and did not help the evidence it was given.

    Either the tags' cross-entropy against the evidence did not go down, or a tag that
    agreed with the evidence before (on its side of ``threshold``) no longer does. Such
    an image is better served by the plain prediction (the serving safeguard).
    """
    eps = 1e-7

    def loss(p: tf.Tensor) -> tf.Tensor:
        p = tf.clip_by_value(p, eps, 1.0 - eps)
        return -tf.reduce_mean(tags * tf.math.log(p) + (1.0 - tags) * tf.math.log(1.0 - p), -1)

    present = tags >= 0.5
    agree_before = tf.equal(before >= threshold, present)
    agree_after = tf.equal(after >= threshold, present)
    flipped = tf.reduce_any(tf.logical_and(agree_before, tf.logical_not(agree_after)), -1)
    worse = loss(after) >= loss(before)
    return tf.logical_and(taken > 0, tf.logical_or(worse, flipped))


def _bce(tags: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Per-image mean over tags of sigmoid cross-entropy: [B, T] -> [B]."""
    return tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=tags, logits=logits), axis=-1
    )


# ------------------------------------------------------------------------ refitter
class EvidenceRefitter:
    """Refit a segmentation network to image-level evidence, then predict.

    Args:
      network: functional Keras network following ARCHITECTURE.md's contract.
      config: :class:`EvidenceConfig`.
      variables: which variables to refit in weights mode (see
        :func:`select_variables`); default = everything upstream of the tags.
        Ignored in latent mode (nothing but the offset is optimised there).
      tag_class_ids: tag ``i`` -> class id (needed for pruning).
      semantic_key / tags_key: output names.

    ``__call__(images, tags, steps=None)`` validates the evidence in Python, then
    runs :attr:`refit_fn`, a ``tf.function`` with input signature
    ``(images float32 [B,H,W,3], tags float32 [B,T], steps int32 [])`` that can be
    exported in a SavedModel (the module must also track ``network.variables``).
    """

    def __init__(
        self,
        network: keras.Model,
        config: EvidenceConfig | None = None,
        *,
        variables: VariableSpec = None,
        tag_class_ids: Sequence[int] | None = None,
        semantic_key: str = "semantic",
        tags_key: str = "tags",
    ) -> None:
        self.network = network
        self.config = config or EvidenceConfig()
        self.semantic_key = semantic_key
        self.tags_key = tags_key
        self.tag_class_ids = None if tag_class_ids is None else [int(c) for c in tag_class_ids]
        tags_out = output_tensor(network, tags_key)
        output_tensor(network, semantic_key)
        self.num_tags = int(tags_out.shape[-1])
        if self.config.prune or self.config.anchor > 0:
            if self.tag_class_ids is None:
                what = "prune=True" if self.config.prune else "anchor > 0"
                raise ValueError(f"EvidenceConfig.{what} needs tag_class_ids")
            if len(self.tag_class_ids) != self.num_tags:
                raise ValueError(
                    f"tag_class_ids has {len(self.tag_class_ids)} entries, the tag head "
                    f"has {self.num_tags} outputs"
                )
        self.mixed = _is_mixed(network)
        cfg = self.config
        self.optimizer = FunctionalOptimizer(cfg.optimizer, cfg.learning_rate, cfg.beta_1,
                                             cfg.beta_2, cfg.epsilon)
        # The refit loop only needs the tags; a sub-model sharing the layers avoids
        # running the segmentation decoder inside the loop.
        self.tags_model = keras.Model(network.input, tags_out, name=f"{network.name}_tags")
        if self.config.mode == "weights":
            chosen = select_variables(network, variables, tags_key)
            in_tags = {id(v) for v in self.tags_model.variables}
            # Variables outside the tag branch get no gradient: refitting them is a no-op.
            self.refit_variables = [v for v in chosen if id(v) in in_tags]
            if not self.refit_variables:
                raise ValueError("none of the selected variables feeds the tags output")
            # Layers before the first refitted one run once per image, not once per step.
            self.split = frozen_prefix(network, self.refit_variables)
            inputs = network.input if self.split is None else self.split.head.inputs
            outputs = network.output if self.split is None else self.split.head.output
            # What the loop runs: the tags, and the segmentation when the anchor needs it.
            keys = [tags_key, semantic_key] if self.config.anchor > 0 else [tags_key]
            self.loop_model = keras.Model(inputs, [outputs[k] for k in keys],
                                          name=f"{network.name}_refit_loop")
        else:
            self.refit_variables = []
            self.split = split_at(network, self.config.latent_layer)
            self.tags_head = keras.Model(
                self.split.head.inputs, self.split.head.output[tags_key],
                name=f"{network.name}_tags_head",
            )
        in_shape = list(network.inputs[0].shape)
        self.refit_fn = tf.function(
            self._refit,
            input_signature=[
                tf.TensorSpec([None, *in_shape[1:]], tf.float32, name="images"),
                tf.TensorSpec([None, self.num_tags], tf.float32, name="tags"),
                tf.TensorSpec([], tf.int32, name="steps"),
            ],
            jit_compile=self.config.jit_compile,
            reduce_retracing=True,
            autograph=False,  # explicit tf.while_loop / tf.cond throughout
        )

    # ----------------------------------------------------------------- public
    def __call__(self, images: Any, tags: Any, steps: int | None = None) -> dict[str, tf.Tensor]:
        """Validate the evidence, then refit each image and predict."""
        images = np.asarray(images, np.float32) if not tf.is_tensor(images) else images
        if len(images.shape) != 4 or images.shape[-1] != 3:
            raise ValueError(f"images: expected [B, H, W, 3], got shape {list(images.shape)}")
        steps = self.config.steps if steps is None else steps
        tags = validate_evidence(tags, self.num_tags, batch_size=int(images.shape[0]), steps=steps)
        return self.refit_fn(
            tf.convert_to_tensor(images, tf.float32),
            tf.convert_to_tensor(tags),
            tf.constant(int(steps), tf.int32),
        )

    # --------------------------------------------------------------- helpers
    def _values(self, model: keras.Model, overrides: dict[int, tf.Tensor]) -> tuple[list, list]:
        tv = [overrides.get(id(v), v.value) for v in model.trainable_variables]
        ntv = [overrides.get(id(v), v.value) for v in model.non_trainable_variables]
        return tv, ntv

    def _finish(
        self,
        images: tf.Tensor,
        probs: tf.Tensor,
        tags: tf.Tensor,
        before: tf.Tensor,
        after: tf.Tensor,
        taken: tf.Tensor,
    ) -> dict[str, tf.Tensor]:
        fell_back = tf.zeros_like(taken, tf.bool)
        if self.config.safeguard:
            fell_back = refit_hurt(before, after, tags, taken, self.config.threshold)
            cfg = self.config

            def with_plain() -> tf.Tensor:
                plain = multi_scale_probabilities(
                    network_logits_fn(self.network, self.semantic_key), images,
                    cfg.eval_scales, cfg.add_flipped_images)
                return tf.where(fell_back[:, None, None, None], plain, probs)

            # The plain prediction is computed only when some image needs it.
            probs = tf.cond(tf.reduce_any(fell_back), with_plain, lambda: probs)
            after = tf.where(fell_back[:, None], before, after)
        if self.config.prune:
            probs = prune_probabilities(
                probs, tags, self.tag_class_ids, self.config.keep_classes
            )
        return {
            "probabilities": probs,
            "predictions": tf.argmax(probs, axis=-1, output_type=tf.int32),
            "tag_probabilities_before": before,
            "tag_probabilities_after": after,
            "steps_taken": taken,
            "fell_back": fell_back,
        }

    def _scale_step(self, scale: tf.Tensor, finite: tf.Tensor) -> tf.Tensor:
        if not self.mixed:
            return scale
        return tf.where(finite, scale, scale / 2.0)

    def _refit(self, images: tf.Tensor, tags: tf.Tensor, steps: tf.Tensor) -> dict[str, tf.Tensor]:
        tf.debugging.assert_non_negative(steps, message="steps must be >= 0")
        tf.debugging.assert_equal(
            tf.shape(images)[0], tf.shape(tags)[0], message="one tag vector per image"
        )
        if self.config.mode == "latent":
            return self._refit_latent(images, tags, steps)
        return self._refit_weights(images, tags, steps)

    # ------------------------------------------------------------ weights mode
    def _refit_weights(self, images: tf.Tensor, tags: tf.Tensor, steps: tf.Tensor) -> dict:
        cfg = self.config
        num_tags = self.num_tags

        def one(args: tuple[tf.Tensor, tf.Tensor]) -> tuple:
            image, tag = args
            x, y = image[None], tag[None]
            anchors = [tf.convert_to_tensor(v.value) for v in self.refit_variables]
            ids = [id(v) for v in self.refit_variables]
            # The frozen trunk's features, once (inputs of the refitted head).
            loop = self.loop_model
            tags_input = x if self.split is None else list(self.split.trunk(x, training=False))

            def forward(params: list[tf.Tensor]) -> list[tf.Tensor]:
                tv, ntv = self._values(loop, dict(zip(ids, params, strict=True)))
                out, _ = loop.stateless_call(tv, ntv, tags_input, training=False)
                out = out if isinstance(out, (list, tuple)) else [out]  # one output: a tensor
                return [tf.cast(o, tf.float32) for o in out]

            def tag_logits(params: list[tf.Tensor]) -> tf.Tensor:
                return forward(params)[0]

            if cfg.anchor > 0:  # the unrefitted segmentation, pruned to the evidence
                target = tf.stop_gradient(prune_probabilities(
                    tf.nn.softmax(forward(anchors)[1], -1), y, self.tag_class_ids,
                    cfg.keep_classes))

            def cond(i, taken, params, state, scale, before, done):
                return tf.logical_and(i < steps, tf.logical_not(done))

            def body(i, taken, params, state, scale, before, done):
                with tf.GradientTape() as tape:
                    tape.watch(params)
                    out = forward(params)
                    logits = out[0]
                    loss = _bce(y, logits)[0]
                    if cfg.anchor > 0:
                        loss += cfg.anchor * tf.reduce_mean(tf.reduce_sum(
                            -target * tf.nn.log_softmax(out[1], -1), -1))
                    if cfg.alpha > 0:
                        loss += cfg.alpha * tf.add_n(
                            [tf.reduce_sum(tf.square(p - a)) for p, a in zip(params, anchors, strict=True)]
                        )
                    scaled = loss * scale if self.mixed else loss
                grads = tape.gradient(scaled, params)
                if self.mixed:
                    grads = [g / scale for g in grads]
                if cfg.clip_norm > 0:
                    grads, _ = tf.clip_by_global_norm(grads, cfg.clip_norm)
                probs = tf.sigmoid(logits)[0]
                before = tf.where(tf.equal(i, 0), probs, before)
                agree = agrees_with_evidence(probs, y[0], cfg.threshold, cfg.margin)
                stop = tf.logical_and(tf.constant(cfg.early_stopping), agree)
                finite = _all_finite(grads) if self.mixed else tf.constant(True)
                apply = tf.logical_and(tf.logical_not(stop), finite)
                params, state = tf.cond(
                    apply,
                    lambda: self.optimizer.update(params, grads, state, tf.cast(taken, tf.float32)),
                    lambda: (list(params), list(state)),
                )
                taken += tf.cast(apply, tf.int32)
                return i + 1, taken, params, state, self._scale_step(scale, finite), before, stop

            params0 = list(anchors)
            init = (
                tf.constant(0),
                tf.constant(0),
                params0,
                self.optimizer.init(params0),
                tf.constant(cfg.loss_scale, tf.float32),
                tf.zeros([num_tags], tf.float32),
                tf.constant(False),
            )
            i, taken, params, _, _, before, _ = tf.while_loop(cond, body, init)
            overrides = dict(zip(ids, params, strict=True))

            def logits_fn(inp: tf.Tensor) -> tf.Tensor:
                if self.split is not None and inp is x:  # the trunk's features are known
                    tv, ntv = self._values(self.split.head, overrides)
                    out, _ = self.split.head.stateless_call(tv, ntv, tags_input,
                                                            training=False)
                else:
                    tv, ntv = self._values(self.network, overrides)
                    out, _ = self.network.stateless_call(tv, ntv, inp, training=False)
                return out[self.semantic_key]

            probs = multi_scale_probabilities(
                logits_fn, x, cfg.eval_scales, cfg.add_flipped_images
            )[0]
            after = tf.sigmoid(tag_logits(params))[0]
            before = tf.where(tf.equal(i, 0), after, before)
            return probs, before, after, taken

        probs, before, after, taken = tf.map_fn(
            one,
            (images, tags),
            fn_output_signature=(
                tf.TensorSpec(None, tf.float32),
                tf.TensorSpec([num_tags], tf.float32),
                tf.TensorSpec([num_tags], tf.float32),
                tf.TensorSpec([], tf.int32),
            ),
        )
        return self._finish(images, probs, tags, before, after, taken)

    # ------------------------------------------------------------- latent mode
    def _refit_latent(self, images: tf.Tensor, tags: tf.Tensor, steps: tf.Tensor) -> dict:
        cfg = self.config
        feats = self.split.trunk(images, training=False)
        latent, side = feats[0], list(feats[1:])
        batch = tf.shape(images)[0]

        def per_image_bcast(v: tf.Tensor) -> tf.Tensor:  # [B] -> [B,1,1,...]
            return tf.reshape(v, tf.concat([[-1], tf.ones([tf.rank(latent) - 1], tf.int32)], 0))

        def cond(i, taken, delta, state, scale, before, done):
            return tf.logical_and(i < steps, tf.logical_not(tf.reduce_all(done)))

        def body(i, taken, delta, state, scale, before, done):
            with tf.GradientTape() as tape:
                tape.watch(delta)
                logits = tf.cast(
                    self.tags_head([latent + tf.cast(delta, latent.dtype), *side], training=False),
                    tf.float32,
                )
                per_image = _bce(tags, logits)
                if cfg.alpha > 0:
                    per_image += cfg.alpha * tf.reduce_sum(
                        tf.reshape(tf.square(delta), [batch, -1]), axis=-1
                    )
                loss = tf.reduce_sum(per_image)
                scaled = loss * scale if self.mixed else loss
            grad = tape.gradient(scaled, delta)
            if self.mixed:
                grad = grad / scale
            probs = tf.sigmoid(logits)
            before = tf.where(tf.equal(i, 0), probs, before)
            agree = agrees_with_evidence(probs, tags, cfg.threshold, cfg.margin)
            stop = tf.logical_and(tf.constant(cfg.early_stopping), agree)
            done = tf.logical_or(done, stop)
            if self.mixed:
                finite = tf.reduce_all(
                    tf.math.is_finite(tf.reshape(grad, [batch, -1])), axis=-1
                )
                grad = tf.where(tf.math.is_finite(grad), grad, tf.zeros_like(grad))
            else:
                finite = tf.ones([batch], tf.bool)
            if cfg.clip_norm > 0:
                norm = tf.sqrt(tf.reduce_sum(tf.reshape(tf.square(grad), [batch, -1]), -1))
                grad = grad * per_image_bcast(
                    cfg.clip_norm / tf.maximum(norm, cfg.clip_norm)
                )
            active = tf.logical_and(tf.logical_not(done), finite)
            t = per_image_bcast(tf.cast(taken, tf.float32))
            new, new_state = self.optimizer.update([delta], [grad], state, t)
            mask = per_image_bcast(active)
            delta = tf.where(mask, new[0], delta)
            state = [tf.where(mask, n, o) for n, o in zip(new_state, state, strict=True)]
            taken += tf.cast(active, tf.int32)
            scale = self._scale_step(scale, tf.reduce_all(finite))
            return i + 1, taken, delta, state, scale, before, done

        delta0 = tf.zeros(tf.shape(latent), tf.float32)
        init = (
            tf.constant(0),
            tf.zeros([batch], tf.int32),
            delta0,
            self.optimizer.init([delta0]),
            tf.constant(cfg.loss_scale, tf.float32),
            tf.zeros([batch, self.num_tags], tf.float32),
            tf.zeros([batch], tf.bool),
        )
        i, taken, delta, _, _, before, _ = tf.while_loop(cond, body, init)

        def make_logits_fn(flipped: bool) -> Callable[[tf.Tensor], tf.Tensor]:
            def fn(inp: tf.Tensor) -> tf.Tensor:
                f = self.split.trunk(inp, training=False)
                d = tf.reverse(delta, axis=[2]) if flipped else delta
                if d.shape.rank == 4:
                    d = tf.cond(
                        tf.reduce_all(tf.equal(tf.shape(d)[1:3], tf.shape(f[0])[1:3])),
                        lambda: d,
                        lambda: tf.image.resize(d, tf.shape(f[0])[1:3]),
                    )
                out = self.split.head([f[0] + tf.cast(d, f[0].dtype), *f[1:]], training=False)
                return out[self.semantic_key]

            return fn

        single = cfg.eval_scales == (1.0,) and not cfg.add_flipped_images
        if single:
            out = self.split.head([latent + tf.cast(delta, latent.dtype), *side], training=False)
            probs = tf.nn.softmax(tf.cast(out[self.semantic_key], tf.float32), axis=-1)
            after = tf.sigmoid(tf.cast(out[self.tags_key], tf.float32))
        else:
            probs = multi_scale_probabilities(
                make_logits_fn(False), images, cfg.eval_scales, cfg.add_flipped_images,
                flipped_logits_fn=make_logits_fn(True),
            )
            after = tf.sigmoid(
                tf.cast(
                    self.tags_head([latent + tf.cast(delta, latent.dtype), *side], training=False),
                    tf.float32,
                )
            )
        before = tf.where(tf.equal(i, 0), after, before)
        return self._finish(images, probs, tags, before, after, taken)

