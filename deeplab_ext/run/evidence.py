"""The refit settings a run was tuned with (``tools.tune_evidence``: ``evidence_tuned.json``
in the run directory) and which of them a tool uses, kind by kind. The refitter itself is
built by ``EvidenceOptions.refitter`` (``run.options``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Callable, Collection

from deeplab_ext.run.options import EvidenceOptions
from deeplab_ext.run.refit_kinds import kind_names

__all__ = [
    "NO_REFIT",
    "evidence_by_kind",
    "load_tuned",
    "save_json",
    "save_tuned",
]


# ------------------------------------------------------------------ tuned settings
TUNED_FILE = "evidence_tuned.json"


def load_tuned(checkpoint_dir: str | os.PathLike) -> dict | None:
    """What ``tools.tune_evidence`` wrote into the run directory, or None; a file of
    another shape is an error naming it (not a KeyError deep in a tool)."""
    path = pathlib.Path(checkpoint_dir) / TUNED_FILE
    if not path.is_file():
        return None
    fix = ("run tools.tune_evidence on this run again, or pass --nouse_tuned_evidence to "
           "ignore the file")
    try:
        tuned = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path} is not readable JSON ({e}); {fix}") from e
    try:
        kinds = tuned["kinds"]
        ok = isinstance(kinds, dict) and tuned["serving_kind"] in kinds and all(
            isinstance(e, dict) and isinstance(e["evidence"], dict) for e in kinds.values())
        for entry in [*kinds.values(), *([tuned["no_refit"]] if "no_refit" in tuned else [])]:
            EvidenceOptions(**entry["evidence"])
    except (KeyError, TypeError, AttributeError) as e:
        ok, why = False, e
    else:
        why = "kinds / serving_kind / evidence missing"
    if not ok:
        raise ValueError(f"{path} is not what tools.tune_evidence writes ({why!r}); {fix}")
    return tuned


def save_json(checkpoint_dir: str | os.PathLike, name: str, payload: dict) -> pathlib.Path:
    from deeplab_ext.run.rundir import atomic_write

    return atomic_write(pathlib.Path(checkpoint_dir) / name,
                        json.dumps(payload, indent=2, default=list))


def save_tuned(checkpoint_dir: str | os.PathLike, payload: dict) -> pathlib.Path:
    return save_json(checkpoint_dir, TUNED_FILE, payload)


NO_REFIT = "none"  # evidence_by_kind's key of the rows without a refit (their soft prior)


def evidence_by_kind(checkpoint_dir: str | os.PathLike, evidence: EvidenceOptions,
                     explicit: Collection[str] = (), *, use_tuned: bool = True,
                     printer: Callable[[str], None] = print) -> dict[str, EvidenceOptions]:
    """The refit settings of each kind for a run: its tuned ones where it has them (the
    fields in ``explicit``, i.e. flags given, taken from ``evidence``), else ``evidence``;
    under ``NO_REFIT`` those of the rows without a refit (a soft tuning's prior)."""
    tuned = load_tuned(checkpoint_dir) if use_tuned else None
    if not tuned:
        return {kind: evidence for kind in (*kind_names(), NO_REFIT)}
    out = {}
    for kind in (*kind_names(), NO_REFIT):
        entry = tuned.get("no_refit") if kind == NO_REFIT else tuned["kinds"].get(kind)
        base = EvidenceOptions(**entry["evidence"]) if entry else evidence
        out[kind] = dataclasses.replace(base, **{f: getattr(evidence, f) for f in explicit})
    given = f"; flags given win: {', '.join(sorted(explicit))}" if explicit else ""
    printer(f"Refit settings tuned on {tuned['dataset_dir']}:{tuned['tune_split']} "
            f"({tuned['num_images']} images) for {', '.join(tuned['kinds'])} from "
            f"{pathlib.Path(checkpoint_dir) / TUNED_FILE}{given}")
    return out
