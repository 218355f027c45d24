"""``--format=saved_model``: the TF serving functions (``serving.SegmenterServing``) as a
SavedModel in the export directory itself: any input size, ``serving_default`` served
from constants (its batch norms folded) and ``segment_with_evidence`` (the refit, which
keeps the variables). ``tools.predict --saved_model`` is its client
(``export.LoadedSegmenter``); it is checked by loading it in a fresh process in the tests,
not at every export (a second load of the refit graph would double an export's time)."""

from __future__ import annotations

import pathlib
from typing import Any

from deeplab_ext.run.formats.base import ExportFormat, ExportJob, Runtime, register_format


class SavedModelFormat(ExportFormat):
    name = "saved_model"
    description = "any input size, evidence refit"
    fixed_size = False
    entries = ("saved_model.pb", "variables", "fingerprint.pb")

    def write(self, job: ExportJob, settings: dict[str, Any]) -> None:
        import tensorflow as tf

        from tf_mtl.serving_graph import with_constant_weights

        signatures = job.module.signatures
        signatures["serving_default"] = with_constant_weights(signatures["serving_default"])
        tf.saved_model.save(job.module, str(job.directory), signatures=signatures)
        job.metadata["signatures"] = sorted(signatures)
        return None

    def load(self, path: pathlib.Path) -> Runtime:
        """``serving_default`` of an export directory, at any input size."""
        import tensorflow as tf

        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        return Runtime(lambda images: {k: v.numpy() for k, v in
                                       serve(images=tf.constant(images)).items()},
                       None, [])


FORMAT = register_format(SavedModelFormat())
