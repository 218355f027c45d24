"""The run directory: what ``tools.train`` writes beside its checkpoints, and restoring it.

``model_config.json`` records the model family (and the module that registers it), the
family's config, the dataset's classes and the training crop, so evaluation, vis,
export, predict and the demo rebuild the network in a new process without the trainer
and without re-registering anything. Files written before families existed (no
``family`` key) are DeepLab runs.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import keras
import tensorflow as tf

from deeplab_ext.data.datasets import DatasetInfo, info_from_dict, info_to_dict
from deeplab_ext.data.preprocess import MEAN_PIXEL_INCEPTION
from deeplab_ext.models.registry import ModelFamily, build_network, family_of, get_family
from tf_mtl.inference import InputAlignment

__all__ = [
    "MODEL_CONFIG_FILE",
    "input_alignment",
    "latest_checkpoint",
    "load_run_config",
    "restore_network",
    "save_run_config",
]

MODEL_CONFIG_FILE = "model_config.json"
_LEGACY_FAMILY = "deeplab"


def atomic_write(path: str | os.PathLike, data: str | bytes) -> pathlib.Path:
    """Write ``data`` to ``path`` through a temporary file and a rename (never half a file)."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    os.replace(tmp, path)
    return path


def save_run_config(logdir: str | os.PathLike, family: ModelFamily, config: Any,
                    info: DatasetInfo, extra: dict | None = None) -> pathlib.Path:
    """Write the family, its config and the dataset next to the checkpoints (atomically)."""
    payload = {"family": family.name, "family_module": family.module,
               "model": config.to_dict(), "dataset": info_to_dict(info), **(extra or {})}
    return atomic_write(pathlib.Path(logdir) / MODEL_CONFIG_FILE,
                        json.dumps(payload, indent=2, default=list))


def load_run_config(checkpoint_dir: str | os.PathLike) -> dict:
    """Read what :func:`save_run_config` wrote; a clear error names the directory."""
    path = pathlib.Path(checkpoint_dir) / MODEL_CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: --checkpoint_dir must be a --train_logdir written by "
            "tools.train (it holds the checkpoints and model_config.json)."
        )
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path} is not readable JSON ({e}): the run directory's record is "
                         "damaged; restore it from a copy, or train again into a new "
                         "--train_logdir") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict) \
            or not isinstance(meta.get("dataset"), (dict, str)):
        raise ValueError(f"{path} is not a run record of tools.train (expected an object with "
                         f"'model' and 'dataset', got {type(meta).__name__}"
                         f"{' with keys ' + str(sorted(meta))[:120] if isinstance(meta, dict) else ''}"
                         "); restore it from a copy, or train again into a new --train_logdir")
    meta.setdefault("family", _LEGACY_FAMILY)
    return meta


def latest_checkpoint(checkpoint_dir: str | os.PathLike, flag: str = "--checkpoint_dir"
                      ) -> str | None:
    """The newest checkpoint of a run directory, or None when it has none at all. A
    ``checkpoint`` file naming a checkpoint that is gone, while others are there, is an
    error naming them (never silently "no checkpoint": a trainer would start afresh over
    them)."""
    path = tf.train.latest_checkpoint(str(checkpoint_dir))
    if path is not None:
        return path
    found = sorted(pathlib.Path(checkpoint_dir).glob("ckpt-*.index"),
                   key=lambda p: int(p.stem.split("-")[-1]) if p.stem.split("-")[-1].isdigit()
                   else -1)
    if not found:
        return None
    index = pathlib.Path(checkpoint_dir) / "checkpoint"
    named = index.read_text().strip().splitlines()[:1] if index.is_file() else []
    raise ValueError(f"{flag}={checkpoint_dir}: its 'checkpoint' file "
                     f"{'names ' + named[0] if named else 'is missing or empty'}, which is not "
                     f"there, but {found[-1].with_suffix('').name} is: pass "
                     f"--checkpoint_path={found[-1].with_suffix('')} (or fix {index})")


def _restore_problem(network: keras.Model, path: str) -> str | None:
    """Restore the network's weights from ``path``; what went wrong, or None.

    A shape mismatch raises inside restore() itself, a missing variable at the check:
    both mean "another model".
    """
    try:
        tf.train.Checkpoint(network=network).restore(path).expect_partial() \
            .assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - a damaged file raises DataLoss, IndexError, ...
        raise ValueError(f"checkpoint {path} cannot be read ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160] if str(e) else 'damaged'}): its files "
                         "are damaged or truncated. Use another with --checkpoint_path, or "
                         "train again") from e
    return None


def run_family(meta: dict) -> ModelFamily:
    return get_family(meta["family"], meta.get("family_module"))


def restore_network(checkpoint_dir: str | os.PathLike, checkpoint_path: str | None = None,
                    input_shape=(None, None, 3)) -> tuple[keras.Model, DatasetInfo, dict]:
    """Rebuild the network a run trained and restore its weights: (network, info, meta);
    ``meta["checkpoint_path"]`` names the checkpoint read.

    A checkpoint written for another model is refused with a clear error naming it.
    """
    meta = load_run_config(checkpoint_dir)
    info = info_from_dict(meta["dataset"])
    family = run_family(meta)
    config = family.config_class.from_dict(meta["model"])
    network = build_network(config, input_shape=input_shape)
    path = checkpoint_path or latest_checkpoint(checkpoint_dir)
    if checkpoint_path and not tf.io.gfile.exists(f"{checkpoint_path}.index"):
        raise FileNotFoundError(f"--checkpoint_path={checkpoint_path}: no such checkpoint "
                                f"({checkpoint_path}.index is missing)")
    if path is None:
        raise FileNotFoundError(
            f"No checkpoint in {checkpoint_dir}: run tools.train with --train_logdir there first."
        )
    problem = _restore_problem(network, path)
    if problem:
        raise ValueError(
            f"Checkpoint {path} does not match model {config.name} (was it written for another "
            f"--model_variant or dataset?): {problem[:300]}"
        )
    broken = non_finite_weights(network)
    if broken:
        raise ValueError(f"checkpoint {path} holds weights that are not finite (NaN or inf: "
                         f"{', '.join(broken[:3])}{', ...' if len(broken) > 3 else ''}): its "
                         "training diverged, and what it predicts means nothing. Use an earlier "
                         "checkpoint (--checkpoint_path) or train again with a lower rate")
    return network, info, {**meta, "checkpoint_path": path}


def non_finite_weights(model: keras.Model) -> list[str]:
    """The weights of ``model`` holding a NaN or an infinity (their paths)."""
    return [w.path for w in model.weights
            if keras.backend.is_float_dtype(w.dtype)
            and not bool(tf.reduce_all(tf.math.is_finite(w)))]


def input_alignment(network: keras.Model, meta: dict) -> InputAlignment:
    """The size grid of a restored run: its family's stride and its training crop, padded
    with the pixel the input pipeline pads crops with. No crop recorded: no alignment."""
    stride_of = family_of(network).input_stride
    crop = meta.get("train_crop_size")
    if stride_of is None or not crop:
        return InputAlignment()
    return InputAlignment.from_crop(crop, stride_of(network.model_config), MEAN_PIXEL_INCEPTION)
