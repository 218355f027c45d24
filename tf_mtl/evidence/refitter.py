"""The refitter: a ``tf.function`` whose ``tf.while_loop`` carries the refitted values as
loop state (weights mode: chosen variables, one image at a time; latent mode: an offset on
a feature, the whole batch at once). Both loops take their steps through one
:class:`_LoopStep` (loss scaling, unscaled gradients, skipped non-finite steps, early
stopping)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tf_mtl.evidence.config import EvidenceConfig, validate_evidence
from tf_mtl.evidence.pruning import (
    agrees_with_evidence,
    evidence_bce,
    prune_probabilities,
    refit_hurt,
)
from tf_mtl.evidence.variables import VariableSpec, select_variables
from tf_mtl.functional_optimizers import FunctionalOptimizer
from tf_mtl.graph import frozen_prefix, output_tensor, split_at
from tf_mtl.inference import multi_scale_probabilities, network_logits_fn

__all__ = ["EvidenceRefitter"]


def _is_mixed(network: keras.Model) -> bool:
    return any(
        getattr(layer, "compute_dtype", "float32") in ("float16", "bfloat16")
        for layer in network.layers
    )


def _all_finite(ts: list[tf.Tensor]) -> tf.Tensor:
    if not ts:
        return tf.constant(True)
    return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(g)) for g in ts]))


class _LoopStep:
    """The rules one refit step follows in both loops: the loss goes through the dynamic
    loss scale under mixed precision and the gradients come back unscaled; a step stops
    early once the tags agree with the evidence (``early_stopping``); the scale halves
    after a non-finite step. (Each loop keeps its own update: weights mode one image, a
    list of variables; latent mode the batch, one masked offset.)"""

    def __init__(self, config: EvidenceConfig, mixed: bool) -> None:
        self.config, self.mixed = config, mixed

    def gradients(self, objective: Callable[[Any], tuple[tf.Tensor, Any]], params: Any,
                  scale: tf.Tensor) -> tuple[Any, Any]:
        """``objective(params) -> (loss, aux)``; returns ``(aux, d loss / d params)``."""
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss, aux = objective(params)
            scaled = loss * scale if self.mixed else loss
        grads = tape.gradient(scaled, params)
        if self.mixed:
            grads = tf.nest.map_structure(lambda g: g / scale, grads)
        return aux, grads

    def stop(self, tag_probs: tf.Tensor, tags: tf.Tensor) -> tf.Tensor:
        cfg = self.config
        agree = agrees_with_evidence(tag_probs, tags, cfg.threshold, cfg.margin)
        return tf.logical_and(tf.constant(cfg.early_stopping), agree)

    def next_scale(self, scale: tf.Tensor, finite: tf.Tensor) -> tf.Tensor:
        return tf.where(finite, scale, scale / 2.0) if self.mixed else scale


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
    ``(images float32 [B,H,W,3], tags float32 [B,T] in [0, 1], steps int32 [])`` that can be
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
        self.step = _LoopStep(self.config, self.mixed)
        cfg = self.config
        self.optimizer = FunctionalOptimizer(cfg.optimizer, cfg.learning_rate, cfg.beta_1,
                                             cfg.beta_2, cfg.epsilon)
        # The refit loop only needs the tags; a sub-model sharing the layers avoids
        # running the segmentation decoder inside the loop.
        self.tags_model = keras.Model(network.input, tags_out, name=f"{network.name}_tags")
        if self.config.mode == "weights":
            self._build_weights_mode(variables)
        else:
            self._build_latent_mode()
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

    def _build_weights_mode(self, variables: VariableSpec) -> None:
        """The refitted variables and the model the loop runs (from the first of them)."""
        network, tags_key = self.network, self.tags_key
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
        keys = [tags_key, self.semantic_key] if self.config.anchor > 0 else [tags_key]
        self.loop_model = keras.Model(inputs, [outputs[k] for k in keys],
                                      name=f"{network.name}_refit_loop")

    def _build_latent_mode(self) -> None:
        """The network split at the latent layer, and its head's tags output."""
        self.refit_variables = []
        self.split = split_at(self.network, self.config.latent_layer)
        self.tags_head = keras.Model(
            self.split.head.inputs, self.split.head.output[self.tags_key],
            name=f"{self.network.name}_tags_head",
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
                probs, tags, self.tag_class_ids, self.config.keep_classes,
                strength=self.config.prune_strength,
            )
        return {
            "probabilities": probs,
            "predictions": tf.argmax(probs, axis=-1, output_type=tf.int32),
            "tag_probabilities_before": before,
            "tag_probabilities_after": after,
            "steps_taken": taken,
            "fell_back": fell_back,
        }

    def _refit(self, images: tf.Tensor, tags: tf.Tensor, steps: tf.Tensor) -> dict[str, tf.Tensor]:
        tf.debugging.assert_non_negative(steps, message="steps must be >= 0")
        tf.debugging.assert_equal(
            tf.shape(images)[0], tf.shape(tags)[0], message="one tag vector per image"
        )
        # A caller of the exported signature may skip validate_evidence: NaN or a value
        # outside [0, 1] would silently refit toward nonsense.
        tf.debugging.assert_equal(
            tf.reduce_all(tf.logical_and(tags >= 0.0, tags <= 1.0)), True,
            message="tags must be probabilities in [0, 1] (no NaN)")
        if self.config.mode == "latent":
            return self._refit_latent(images, tags, steps)
        return self._refit_weights(images, tags, steps)

    # ------------------------------------------------------------ weights mode
    def _refit_weights(self, images: tf.Tensor, tags: tf.Tensor, steps: tf.Tensor) -> dict:
        """Each image refitted on its own from the trained weights (``tf.map_fn``)."""
        probs, before, after, taken = tf.map_fn(
            lambda args: self._refit_one(args[0], args[1], steps),
            (images, tags),
            fn_output_signature=(
                tf.TensorSpec(None, tf.float32),
                tf.TensorSpec([self.num_tags], tf.float32),
                tf.TensorSpec([self.num_tags], tf.float32),
                tf.TensorSpec([], tf.int32),
            ),
        )
        return self._finish(images, probs, tags, before, after, taken)

    def _refit_one(self, image: tf.Tensor, tag: tf.Tensor, steps: tf.Tensor) -> tuple:
        """One image: the loop over the refitted values, then its prediction with them."""
        x, y = image[None], tag[None]
        anchors = [tf.convert_to_tensor(v.value) for v in self.refit_variables]
        ids = [id(v) for v in self.refit_variables]
        # The frozen trunk's features, once (inputs of the refitted head).
        tags_input = x if self.split is None else list(self.split.trunk(x, training=False))
        forward = self._loop_forward(ids, tags_input)
        objective = self._weights_objective(forward, anchors, y)
        i, taken, params, before = self._weights_loop(objective, anchors, y, steps)
        probs = multi_scale_probabilities(
            self._refitted_logits_fn(x, tags_input, dict(zip(ids, params, strict=True))),
            x, self.config.eval_scales, self.config.add_flipped_images,
        )[0]
        after = tf.sigmoid(forward(params)[0])[0]
        before = tf.where(tf.equal(i, 0), after, before)
        return probs, before, after, taken

    def _loop_forward(self, ids: list[int], tags_input: Any
                      ) -> Callable[[list[tf.Tensor]], list[tf.Tensor]]:
        """params -> the loop model's outputs (tag logits, and the segmentation logits when
        the anchor needs them), float32."""
        loop = self.loop_model

        def forward(params: list[tf.Tensor]) -> list[tf.Tensor]:
            tv, ntv = self._values(loop, dict(zip(ids, params, strict=True)))
            out, _ = loop.stateless_call(tv, ntv, tags_input, training=False)
            out = out if isinstance(out, (list, tuple)) else [out]  # one output: a tensor
            return [tf.cast(o, tf.float32) for o in out]

        return forward

    def _weights_objective(self, forward: Callable[[list[tf.Tensor]], list[tf.Tensor]],
                           anchors: list[tf.Tensor], y: tf.Tensor
                           ) -> Callable[[list[tf.Tensor]], tuple[tf.Tensor, tf.Tensor]]:
        """params -> (loss, tag logits): the tags' BCE against the evidence, the anchor to
        the unrefitted segmentation pruned to the evidence, the L2 term to the trained
        weights (each term only when its weight is > 0)."""
        cfg = self.config
        if cfg.anchor > 0:  # the unrefitted segmentation, pruned to the evidence
            target = tf.stop_gradient(prune_probabilities(
                tf.nn.softmax(forward(anchors)[1], -1), y, self.tag_class_ids,
                cfg.keep_classes, strength=cfg.prune_strength))

        def objective(params: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
            out = forward(params)
            loss = evidence_bce(y, out[0])[0]
            if cfg.anchor > 0:
                loss += cfg.anchor * tf.reduce_mean(tf.reduce_sum(
                    -target * tf.nn.log_softmax(out[1], -1), -1))
            if cfg.alpha > 0:
                loss += cfg.alpha * tf.add_n(
                    [tf.reduce_sum(tf.square(p - a)) for p, a in zip(params, anchors, strict=True)]
                )
            return loss, out[0]

        return objective

    def _weights_loop(self, objective: Callable, anchors: list[tf.Tensor], y: tf.Tensor,
                      steps: tf.Tensor) -> tuple:
        """The ``tf.while_loop`` of one image: ``(steps run, updates applied, refitted
        values, tag probabilities before the first update)``."""
        cfg = self.config

        def cond(i, taken, params, state, scale, before, done):
            return tf.logical_and(i < steps, tf.logical_not(done))

        def body(i, taken, params, state, scale, before, done):
            logits, grads = self.step.gradients(objective, params, scale)
            if cfg.clip_norm > 0:
                grads, _ = tf.clip_by_global_norm(grads, cfg.clip_norm)
            probs = tf.sigmoid(logits)[0]
            before = tf.where(tf.equal(i, 0), probs, before)
            stop = self.step.stop(probs, y[0])
            finite = _all_finite(grads) if self.mixed else tf.constant(True)
            apply = tf.logical_and(tf.logical_not(stop), finite)
            params, state = tf.cond(
                apply,
                lambda: self.optimizer.update(params, grads, state, tf.cast(taken, tf.float32)),
                lambda: (list(params), list(state)),
            )
            taken += tf.cast(apply, tf.int32)
            return i + 1, taken, params, state, self.step.next_scale(scale, finite), before, stop

        params0 = list(anchors)
        init = (
            tf.constant(0),
            tf.constant(0),
            params0,
            self.optimizer.init(params0),
            tf.constant(cfg.loss_scale, tf.float32),
            tf.zeros([self.num_tags], tf.float32),
            tf.constant(False),
        )
        i, taken, params, _, _, before, _ = tf.while_loop(cond, body, init)
        return i, taken, params, before

    def _refitted_logits_fn(self, x: tf.Tensor, tags_input: Any,
                            overrides: dict[int, tf.Tensor]) -> Callable[[tf.Tensor], tf.Tensor]:
        """The segmentation logits with the refitted values (the trunk's features of ``x``
        reused when the refitted head alone runs)."""
        def logits_fn(inp: tf.Tensor) -> tf.Tensor:
            if self.split is not None and inp is x:  # the trunk's features are known
                tv, ntv = self._values(self.split.head, overrides)
                out, _ = self.split.head.stateless_call(tv, ntv, tags_input, training=False)
            else:
                tv, ntv = self._values(self.network, overrides)
                out, _ = self.network.stateless_call(tv, ntv, inp, training=False)
            return out[self.semantic_key]

        return logits_fn

    # ------------------------------------------------------------- latent mode
    def _refit_latent(self, images: tf.Tensor, tags: tf.Tensor, steps: tf.Tensor) -> dict:
        """The whole batch at once: an offset on the latent feature, per-image losses
        summed (independent per-image gradients)."""
        feats = self.split.trunk(images, training=False)
        latent, side = feats[0], list(feats[1:])
        batch = tf.shape(images)[0]
        i, taken, delta, before = self._latent_loop(latent, side, tags, steps, batch)
        probs, after = self._latent_prediction(images, latent, side, delta)
        before = tf.where(tf.equal(i, 0), after, before)
        return self._finish(images, probs, tags, before, after, taken)

    def _latent_objective(self, latent: tf.Tensor, side: list, tags: tf.Tensor,
                          batch: tf.Tensor
                          ) -> Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
        """delta -> (summed loss, tag logits): per image the tags' BCE and the L2 term on
        its offset."""
        cfg = self.config

        def objective(delta: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            logits = tf.cast(
                self.tags_head([latent + tf.cast(delta, latent.dtype), *side], training=False),
                tf.float32,
            )
            per_image = evidence_bce(tags, logits)
            if cfg.alpha > 0:
                per_image += cfg.alpha * tf.reduce_sum(
                    tf.reshape(tf.square(delta), [batch, -1]), axis=-1
                )
            return tf.reduce_sum(per_image), logits

        return objective

    def _latent_loop(self, latent: tf.Tensor, side: list, tags: tf.Tensor, steps: tf.Tensor,
                     batch: tf.Tensor) -> tuple:
        """The batch's ``tf.while_loop``: ``(steps run, updates per image, offset, tag
        probabilities before the first update)``; an image stops on its own."""
        cfg = self.config
        objective = self._latent_objective(latent, side, tags, batch)

        def cond(i, taken, delta, state, scale, before, done):
            return tf.logical_and(i < steps, tf.logical_not(tf.reduce_all(done)))

        def body(i, taken, delta, state, scale, before, done):
            logits, grad = self.step.gradients(objective, delta, scale)
            probs = tf.sigmoid(logits)
            before = tf.where(tf.equal(i, 0), probs, before)
            done = tf.logical_or(done, self.step.stop(probs, tags))
            finite, grad = self._latent_gradient(grad, batch, latent)
            active = tf.logical_and(tf.logical_not(done), finite)
            t = _per_image(tf.cast(taken, tf.float32), latent)
            new, new_state = self.optimizer.update([delta], [grad], state, t)
            mask = _per_image(active, latent)
            delta = tf.where(mask, new[0], delta)
            state = [tf.where(mask, n, o) for n, o in zip(new_state, state, strict=True)]
            taken += tf.cast(active, tf.int32)
            scale = self.step.next_scale(scale, tf.reduce_all(finite))
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
        return i, taken, delta, before

    def _latent_gradient(self, grad: tf.Tensor, batch: tf.Tensor, latent: tf.Tensor
                         ) -> tuple[tf.Tensor, tf.Tensor]:
        """``(finite per image, gradient)``: non-finite entries zeroed under mixed
        precision, each image's gradient clipped to ``clip_norm``."""
        cfg = self.config
        if self.mixed:
            finite = tf.reduce_all(
                tf.math.is_finite(tf.reshape(grad, [batch, -1])), axis=-1
            )
            grad = tf.where(tf.math.is_finite(grad), grad, tf.zeros_like(grad))
        else:
            finite = tf.ones([batch], tf.bool)
        if cfg.clip_norm > 0:
            norm = tf.sqrt(tf.reduce_sum(tf.reshape(tf.square(grad), [batch, -1]), -1))
            grad = grad * _per_image(cfg.clip_norm / tf.maximum(norm, cfg.clip_norm), latent)
        return finite, grad

    def _latent_prediction(self, images: tf.Tensor, latent: tf.Tensor, side: list,
                           delta: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(probabilities, tag probabilities)`` with the offset (the trunk's features
        reused at a single scale; run again at each scale and flip otherwise)."""
        cfg = self.config
        if cfg.eval_scales == (1.0,) and not cfg.add_flipped_images:
            out = self.split.head([latent + tf.cast(delta, latent.dtype), *side], training=False)
            probs = tf.nn.softmax(tf.cast(out[self.semantic_key], tf.float32), axis=-1)
            return probs, tf.sigmoid(tf.cast(out[self.tags_key], tf.float32))
        probs = multi_scale_probabilities(
            self._offset_logits_fn(delta, False), images, cfg.eval_scales,
            cfg.add_flipped_images, flipped_logits_fn=self._offset_logits_fn(delta, True),
        )
        after = tf.sigmoid(
            tf.cast(
                self.tags_head([latent + tf.cast(delta, latent.dtype), *side], training=False),
                tf.float32,
            )
        )
        return probs, after

    def _offset_logits_fn(self, delta: tf.Tensor, flipped: bool
                          ) -> Callable[[tf.Tensor], tf.Tensor]:
        """Segmentation logits of any input with the offset (flipped, resized to the
        input's feature size)."""
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


def _per_image(v: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """``[B]`` -> ``[B, 1, 1, ...]``, broadcastable against ``like``."""
    return tf.reshape(v, tf.concat([[-1], tf.ones([tf.rank(like) - 1], tf.int32)], 0))
