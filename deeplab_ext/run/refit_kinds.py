"""The refit kinds and the evidence modes (rows) of the evidence table, in one table.

A *refit kind* is one way to fit a network to an image's tags at prediction time (L2 to
the trained weights, early stopping, a latent offset); an *evidence mode* is one row of
the reference table: plain inference, pruning, or a kind's refit, pruned or not, and the
soft rows (soft evidence: tags as probabilities, pruning as a prior). Every
tool reads these (``tools.eval --evidence_modes``, ``tools.tune_evidence --kinds``, the
export's served kind, the demo); adding a kind is adding a row here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["EVIDENCE_MODES", "REFIT_KINDS", "EvidenceMode", "RefitKind", "evidence_config",
           "mode_of", "refit_kind"]


@dataclasses.dataclass(frozen=True)
class RefitKind:
    """One refit kind.

    ``steps_field``: the ``EvidenceOptions`` field holding its step count (its cap, for
    early stopping); ``fields``: the fields only it reads; ``search``: its own coordinates
    of the tuning search; ``config``: its ``EvidenceConfig`` keywords from the options.
    """

    name: str
    mode: str
    row: str
    steps_field: str
    fields: tuple[str, ...]
    search: tuple[tuple[str, tuple], ...]
    config: Any  # (EvidenceOptions) -> dict of EvidenceConfig keywords

    def steps(self, evidence: Any) -> int:
        """The steps this kind refits for (0: no refit, plain inference)."""
        return int(getattr(evidence, self.steps_field))


REFIT_KINDS: dict[str, RefitKind] = {k.name: k for k in (
    RefitKind("l2", "bp_l2", "DL-BP-L2", "steps", ("steps", "alpha"),
              (("steps", (5, 10, 20)), ("alpha", (1e-3, 0.1, 0.0))),
              lambda ev: dict(steps=ev.steps, alpha=ev.alpha, anchor=ev.anchor)),
    RefitKind("es", "bp_es", "DL-BP-ES", "es_steps", ("es_steps", "es_margin"),
              (("es_steps", (10, 30)), ("es_margin", (0.0, 0.2))),
              # Early stopping is the seed's DL-BP-ES: no L2 term (the step cap and the
              # stopping rule are its regulariser), whatever --evidence_alpha says.
              lambda ev: dict(steps=ev.es_steps, early_stopping=True, margin=ev.es_margin,
                              alpha=0.0, anchor=ev.anchor)),
    RefitKind("latent", "latent", "DL-LAT", "steps", ("steps", "alpha"),
              (("steps", (5, 10, 20)), ("alpha", (1e-3, 0.1, 0.0))),
              lambda ev: dict(steps=ev.steps, alpha=ev.alpha, mode="latent",
                              early_stopping=False)),
)}


@dataclasses.dataclass(frozen=True)
class EvidenceMode:
    """One row of the evidence table: ``kind`` None is inference without a refit.

    ``soft``: the row reads the soft evidence settings (``--evidence_tag_confidence``
    scales the tags given, ``--evidence_prune_strength`` makes pruning a prior: "-SPr");
    every other row is the seed's (tags as given, pruning that removes)."""

    name: str
    row: str
    kind: str | None
    prune: bool
    soft: bool = False


def _modes() -> dict[str, EvidenceMode]:
    modes = [EvidenceMode("none", "DL-MT", None, False),
             EvidenceMode("prune", "DL-MT-Pr", None, True),
             EvidenceMode("soft_prune", "DL-MT-SPr", None, True, soft=True)]
    for kind in REFIT_KINDS.values():
        modes += [EvidenceMode(kind.mode, kind.row, kind.name, False),
                  EvidenceMode(f"{kind.mode}_prune", f"{kind.row}-Pr", kind.name, True),
                  EvidenceMode(f"{kind.mode}_soft_prune", f"{kind.row}-SPr", kind.name, True,
                               soft=True)]
    order = ("none", "prune", "bp_l2", "bp_es", "bp_l2_prune", "bp_es_prune")  # the table's
    return {m.name: m for m in sorted(modes, key=lambda m: (order.index(m.name)
                                                            if m.name in order else 99))}


EVIDENCE_MODES: dict[str, EvidenceMode] = _modes()


def refit_kind(name: str, flag: str = "--kinds") -> RefitKind:
    if name not in REFIT_KINDS:
        raise ValueError(f"{flag}: unknown refit kind {name!r}; valid: {', '.join(REFIT_KINDS)}")
    return REFIT_KINDS[name]


def mode_of(kind: str, prune: bool, soft: bool = False) -> str:
    """The evidence mode of a kind's row, pruned or not (``soft``: its soft-pruned row)."""
    return REFIT_KINDS[kind].mode + ("_soft_prune" if soft else "_prune" if prune else "")


def evidence_config(evidence: Any, kind: str, prune: bool, scales: tuple[float, ...] = (1.0,),
                    flip: bool = False, keep_classes: tuple[int, ...] = (0,)) -> Any:
    """The ``tf_mtl.evidence.EvidenceConfig`` of one refit kind from ``EvidenceOptions``:
    the fields every kind shares, then the kind's own."""
    from tf_mtl.evidence import EvidenceConfig

    common = dict(learning_rate=evidence.learning_rate, optimizer=evidence.optimizer,
                  threshold=evidence.threshold, jit_compile=evidence.jit_compile,
                  safeguard=evidence.safeguard, clip_norm=evidence.clip_norm,
                  eval_scales=tuple(scales), add_flipped_images=flip, prune=prune,
                  keep_classes=tuple(keep_classes), prune_strength=evidence.prune_strength)
    return EvidenceConfig(**common, **refit_kind(kind, "refit kind").config(evidence))
