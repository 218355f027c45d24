"""What a served model answers, written once: the serving output schema, and the two
places it is built from a network, with TensorFlow's ops (:class:`SegmenterServing`, the
SavedModel's and a run directory's functions, any input size, the evidence refit) and with
Keras' ops (:func:`serving_network`, the fixed-size model the file formats convert).

Both go through :func:`serving_outputs`, so an output added, renamed or re-typed changes
every format and client at once. Imports neither the export nor the deploy client.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from deeplab_ext.data.datasets import DatasetInfo
from deeplab_ext.models.registry import ModelFamily, family_of
from deeplab_ext.run.options import EvidenceOptions
from deeplab_ext.run.outputs import (  # noqa: F401  (the schema's names, re-exported)
    SEMANTIC_PREDICTIONS,
    SEMANTIC_PROBABILITIES,
    TAG_PROBABILITIES,
)
from deeplab_ext.run.refit_kinds import DEFAULT_KIND
from tf_mtl.evidence import EvidenceRefitter
from tf_mtl.inference import InputAlignment, multi_scale_probabilities, network_logits_fn

__all__ = ["SEMANTIC_PREDICTIONS", "SEMANTIC_PROBABILITIES", "TAG_PROBABILITIES",
           "SegmenterServing", "ServingOps", "output_schema", "serving_module",
           "serving_network", "serving_outputs"]



@dataclasses.dataclass(frozen=True)
class ServingOps:
    """The ops the schema is written with: TensorFlow's (a tf.function) or Keras' (a
    functional model a converter reads)."""

    to_float: Callable[[Any], Any]
    sigmoid: Callable[[Any], Any]
    argmax: Callable[[Any], Any]  # int32 over the last axis


TF_OPS = ServingOps(lambda v: tf.cast(v, tf.float32), tf.sigmoid,
                    lambda p: tf.argmax(p, -1, output_type=tf.int32))


def serving_outputs(raw: Mapping[str, Any], family: ModelFamily, probabilities: Any,
                    ops: ServingOps) -> dict[str, Any]:
    """The served outputs from the network's ``raw`` outputs and the semantic
    ``probabilities`` (how they are computed, multi-scale or not, is the caller's)."""
    out = {SEMANTIC_PROBABILITIES: probabilities,
           SEMANTIC_PREDICTIONS: ops.argmax(probabilities)}
    for key, value in raw.items():
        if key == family.semantic_output:
            continue
        value = ops.to_float(value)
        if key == family.tags_output:
            out[TAG_PROBABILITIES] = ops.sigmoid(value)
        else:
            out[key] = value
    return out


def output_schema(network: keras.Model) -> dict[str, tuple[str, tuple[int | None, ...]]]:
    """``{output name: (dtype, shape)}`` a served ``network`` answers (None: any size)."""
    family = family_of(network)
    schema: dict[str, tuple[str, tuple[int | None, ...]]] = {}
    for key, tensor in network.output.items():
        shape = tuple(tensor.shape)
        if key == family.semantic_output:
            schema[SEMANTIC_PROBABILITIES] = ("float32", shape)
            schema[SEMANTIC_PREDICTIONS] = ("int32", shape[:-1])
        else:
            schema[TAG_PROBABILITIES if key == family.tags_output else key] = ("float32", shape)
    return schema


class SegmenterServing(tf.Module):
    """tf.Module with the serving functions; tracks the network's variables.

    ``refitter``: the evidence refitter behind ``segment_with_evidence`` (None: no tag
    head, no such function). ``alignment``: inputs are padded onto the training grid and
    outputs cropped back inside both functions.
    """

    def __init__(self, network: keras.Model, refitter: EvidenceRefitter | None = None,
                 inference_scales: Sequence[float] = (1.0,), add_flipped_images: bool = False,
                 alignment: InputAlignment | None = None):
        super().__init__(name="deeplab_serving")
        family = family_of(network)
        self.network = network
        self.model_variables = list(network.variables)
        self.has_tags = family.tags_output in network.output
        scales, flip = tuple(inference_scales), bool(add_flipped_images)
        logits_fn = network_logits_fn(network, family.semantic_output)
        images_spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")

        def serve(images):
            raw = network(images, training=False)  # one call gives scale 1 and the others
            probs = multi_scale_probabilities(logits_fn, images, scales, flip,
                                              unscaled_logits=raw[family.semantic_output])
            return serving_outputs(raw, family, probs, TF_OPS)

        self.alignment = alignment or InputAlignment()
        self.serve = tf.function(self.alignment.wrap(serve), input_signature=[images_spec])
        self.refitter = refitter if self.has_tags else None
        if self.refitter is not None:
            num_tags = self.refitter.num_tags
            refit_fn = self.refitter.refit_fn

            def with_evidence(images, tags, steps):
                r = refit_fn(images, tags, steps)
                return {SEMANTIC_PROBABILITIES: r["probabilities"],
                        SEMANTIC_PREDICTIONS: r["predictions"],
                        TAG_PROBABILITIES: r["tag_probabilities_after"],
                        "tag_probabilities_before": r["tag_probabilities_before"],
                        "steps_taken": r["steps_taken"], "fell_back": r["fell_back"]}

            self.segment_with_evidence = tf.function(self.alignment.wrap(with_evidence),
                                                     input_signature=[
                images_spec, tf.TensorSpec([None, num_tags], tf.float32, name="tags"),
                tf.TensorSpec([], tf.int32, name="steps")])

    @property
    def signatures(self) -> dict[str, Callable]:
        sigs = {"serving_default": self.serve}
        if self.refitter is not None:
            sigs["segment_with_evidence"] = self.segment_with_evidence
        return sigs


def serving_module(network: keras.Model, info: DatasetInfo, evidence: EvidenceOptions,
                   inference_scales: Sequence[float] = (1.0,),
                   add_flipped_images: bool = False,
                   alignment: InputAlignment | None = None, kind: str = DEFAULT_KIND
                   ) -> SegmenterServing:
    """The serving functions of a network; evidence refits with ``kind`` (``REFIT_KINDS``)."""
    has_tags = family_of(network).tags_output in network.output
    refitter = (evidence.refitter(network, info, kind, False, inference_scales,
                                  add_flipped_images) if has_tags else None)
    return SegmenterServing(network, refitter, inference_scales, add_flipped_images, alignment)


class ArgMax(keras.layers.Layer):
    """int32 argmax over the last axis with TensorFlow's own op: ``keras.ops.argmax``
    adds Bitcast / BitwiseAnd ops (its handling of -0.0) that ONNX cannot express."""

    def call(self, x):
        return tf.argmax(x, axis=-1, output_type=tf.int32)


def serving_network(network: keras.Model, size: Sequence[int]) -> keras.Model:
    """The deployed function as a Keras model at a fixed ``size`` (h, w): raw RGB
    ``images`` in 0..255, batch 1, what the file formats convert."""
    family = family_of(network)
    images = keras.Input((int(size[0]), int(size[1]), 3), batch_size=1, name="images",
                         dtype="float32")
    raw = network(images, training=False)
    probs = keras.ops.softmax(keras.ops.cast(raw[family.semantic_output], "float32"), axis=-1)
    ops = ServingOps(lambda v: keras.ops.cast(v, "float32"), keras.ops.sigmoid,
                     ArgMax(name=SEMANTIC_PREDICTIONS))
    return keras.Model(images, serving_outputs(raw, family, probs, ops), name="serving")
