"""SavedModel export for serving (the original's export_model.py, plus evidence).

Signatures (usable from `tf.saved_model.load` without importing this project):
  * `serving_default(images float32 [B,H,W,3] in 0..255)` ->
    `semantic_predictions` int32 [B,H,W], `semantic_probabilities` float32 [B,H,W,C],
    `tag_probabilities` float32 [B,T] (models with a tag head).
  * `segment_with_evidence(images, tags float32 [B,T], steps int32 [])` -> the same
    after refitting trunk + tag branch to the tags (plus `tag_probabilities_before`,
    `steps_taken`).
Only the network's `semantic` and `tags` outputs are exported: auxiliary-only branches
never reach the export. `assets/deeplab_export.json` holds class names, tag class ids
and the colormap so clients can decode outputs. The export is written to a temporary
directory and renamed into place, so an interrupted export never replaces a good one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from deeplab_ext.datasets import DatasetInfo, info_from_dict, info_to_dict
from tf_mtl.evidence import EvidenceConfig, EvidenceRefitter
from tf_mtl.inference import multi_scale_probabilities, network_logits_fn

METADATA_FILE = "deeplab_export.json"


class DeepLabServing(tf.Module):
    """tf.Module with the serving functions; tracks the network's variables."""

    def __init__(self, network: keras.Model, info: DatasetInfo,
                 evidence: EvidenceConfig | None = None, refit_variables=None,
                 inference_scales: Sequence[float] = (1.0,), add_flipped_images: bool = False):
        super().__init__(name="deeplab_serving")
        self.network = network
        self.model_variables = list(network.variables)
        self.has_tags = isinstance(network.output, dict) and "tags" in network.output
        scales, flip = tuple(inference_scales), bool(add_flipped_images)
        logits_fn = network_logits_fn(network)
        images_spec = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")

        def serve(images):
            probs = multi_scale_probabilities(logits_fn, images, scales, flip)
            out = {"semantic_probabilities": probs,
                   "semantic_predictions": tf.argmax(probs, -1, output_type=tf.int32)}
            if self.has_tags:
                tags = network(images, training=False)["tags"]
                out["tag_probabilities"] = tf.sigmoid(tf.cast(tags, tf.float32))
            return out

        self.serve = tf.function(serve, input_signature=[images_spec])
        self.refitter = None
        if self.has_tags:
            cfg = dataclasses.replace(evidence or EvidenceConfig(), eval_scales=scales,
                                      add_flipped_images=flip)
            self.refitter = EvidenceRefitter(network, cfg, variables=refit_variables,
                                             tag_class_ids=list(info.tag_class_ids))
            num_tags = self.refitter.num_tags
            refit_fn = self.refitter.refit_fn

            def with_evidence(images, tags, steps):
                r = refit_fn(images, tags, steps)
                return {"semantic_probabilities": r["probabilities"],
                        "semantic_predictions": r["predictions"],
                        "tag_probabilities": r["tag_probabilities_after"],
                        "tag_probabilities_before": r["tag_probabilities_before"],
                        "steps_taken": r["steps_taken"]}

            self.segment_with_evidence = tf.function(with_evidence, input_signature=[
                images_spec, tf.TensorSpec([None, num_tags], tf.float32, name="tags"),
                tf.TensorSpec([], tf.int32, name="steps")])


def export_saved_model(network: keras.Model, info: DatasetInfo, export_path: str | os.PathLike,
                       *, evidence: EvidenceConfig | None = None, refit_variables=None,
                       inference_scales: Sequence[float] = (1.0,),
                       add_flipped_images: bool = False, model_config: dict | None = None
                       ) -> pathlib.Path:
    """Write the SavedModel atomically (temp dir + rename); returns the export path."""
    export_path = pathlib.Path(export_path)
    export_path.parent.mkdir(parents=True, exist_ok=True)
    module = DeepLabServing(network, info, evidence, refit_variables, inference_scales,
                            add_flipped_images)
    signatures = {"serving_default": module.serve}
    if module.refitter is not None:
        signatures["segment_with_evidence"] = module.segment_with_evidence
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{export_path.name}.tmp-", dir=export_path.parent))
    try:
        tf.saved_model.save(module, str(tmp), signatures=signatures)
        meta = {"dataset": info_to_dict(info), "model": model_config or {},
                "inference_scales": list(inference_scales),
                "add_flipped_images": add_flipped_images,
                "evidence": dataclasses.asdict(module.refitter.config) if module.refitter else None,
                "signatures": sorted(signatures)}
        (tmp / "assets").mkdir(exist_ok=True)
        (tmp / "assets" / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=list))
        old = None
        if export_path.exists():
            old = export_path.with_name(f".{export_path.name}.old-{os.getpid()}")
            os.replace(export_path, old)
        os.replace(tmp, export_path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise OSError(
                f"Export to {export_path} failed ({e}); nothing already at {export_path} was "
                "changed. Free disk space or choose another --export_path."
            ) from e
        raise
    return export_path


def read_export_metadata(export_path: str | os.PathLike) -> dict:
    path = pathlib.Path(export_path) / "assets" / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: --saved_model must be a directory written by tools.export_model"
        )
    return json.loads(path.read_text())


class LoadedSegmenter:
    """Client for an exported SavedModel that validates inputs before any graph runs.

    (A loaded signature fed a wrong-rank tensor can abort the whole process.)
    """

    def __init__(self, export_path: str | os.PathLike):
        self.meta = read_export_metadata(export_path)
        self.module = tf.saved_model.load(str(export_path))
        self.info = info_from_dict(self.meta["dataset"])
        self.num_tags = len(self.meta["dataset"]["tag_class_ids"])

    @staticmethod
    def _images(images) -> tf.Tensor:
        arr = np.asarray(images, np.float32)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise ValueError(f"images: expected [B, H, W, 3] or [H, W, 3], got {list(arr.shape)}")
        return tf.constant(arr)

    def predict(self, images) -> dict[str, np.ndarray]:
        out = self.module.signatures["serving_default"](images=self._images(images))
        return {k: v.numpy() for k, v in out.items()}

    def predict_with_evidence(self, images, tags, steps: int) -> dict[str, np.ndarray]:
        from tf_mtl.evidence import validate_evidence

        if "segment_with_evidence" not in self.module.signatures:
            raise ValueError("this export has no tag head, so no segment_with_evidence signature")
        x = self._images(images)
        t = validate_evidence(tags, self.num_tags, batch_size=int(x.shape[0]), steps=steps)
        out = self.module.signatures["segment_with_evidence"](
            images=x, tags=tf.constant(t), steps=tf.constant(int(steps), tf.int32))
        return {k: v.numpy() for k, v in out.items()}
