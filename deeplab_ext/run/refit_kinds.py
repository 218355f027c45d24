"""The refit kinds and the evidence modes (rows) of the evidence table.

A *refit kind* is one way to fit a network to an image's tags at prediction time (L2 to
the trained weights, early stopping, a latent offset); an *evidence mode* is one row of
the reference table: plain inference, pruning, or a kind's refit, pruned or not, and the
soft rows (soft evidence: tags as probabilities, pruning as a prior).

Every kind is a file of ``deeplab_ext/run/refit/`` that calls :func:`register_refit_kind`
(discovered before the first lookup, ``REFIT_KINDS``); a user's module registers its own
the same way (``--extra_modules``). Every tool derives what it lists from the registry
(``tools.eval --evidence_modes``, ``tools.tune_evidence --kinds``, the cross-fitted
tables, the demo's rows); the only kind named outside its own file is ``DEFAULT_KIND``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from tf_mtl.registry import Registry, discover

__all__ = ["DEFAULT_KIND", "EVIDENCE_MODES", "REFIT_KINDS", "EvidenceMode", "RefitKind",
           "default_kinds", "kind_names", "mode_of", "refit_kind",
           "register_refit_kind", "table_modes"]

# The kind served and evaluated when nothing says otherwise (the export, the demo's pooled
# rows, EvidenceOptions.refitter): the seed's DL-BP-L2.
DEFAULT_KIND = "l2"


@dataclasses.dataclass(frozen=True)
class RefitKind:
    """One refit kind, as its file registers it.

    ``mode`` / ``row``: its evidence mode and table label (``_prune`` / ``-Pr`` and
    ``_soft_prune`` / ``-SPr`` twins are derived); ``config``: its ``EvidenceConfig``
    keywords from ``EvidenceOptions`` (its objective terms: the L2 weight, early stopping
    and its margin, the step count); ``steps_field``: the ``EvidenceOptions`` field set to
    0 for "no refit"; ``fields``: the fields only it reads (the tuning table shows them);
    ``search``: its own coordinates of the tuning search; ``refit_mode``: ``"weights"``
    (refits variables: the refitted groups and the anchor are searched too) or
    ``"latent"`` (an offset on the family's latent feature); ``rank``: its place in tables
    and lists; ``default``: tuned and shown by default (the seed's table has its rows)."""

    name: str
    mode: str
    row: str
    steps_field: str
    fields: tuple[str, ...]
    search: tuple[tuple[str, tuple], ...]
    config: Callable[[Any], dict]
    refit_mode: str = "weights"
    rank: int = 100
    default: bool = False

    def steps(self, evidence: Any) -> int:
        """The steps this kind refits for (its cap, for early stopping; 0: no refit)."""
        return int(self.config(evidence)["steps"])

    @property
    def weights(self) -> bool:
        """Refits the network's variables (not a latent offset)."""
        return self.refit_mode == "weights"


REFIT_KINDS: Registry[RefitKind] = Registry(
    "refit kind", "--kinds", discover=lambda: discover("deeplab_ext.run.refit"))


def register_refit_kind(kind: RefitKind, *, override: bool = False) -> RefitKind:
    """Register ``kind`` (a name or mode already taken is refused unless ``override``)."""
    from tf_mtl.evidence import MODES

    if kind.refit_mode not in MODES:
        raise ValueError(f"refit kind {kind.name!r}: refit_mode must be one of {MODES}")
    clash = [k.name for k in REFIT_KINDS.values()
             if k.mode == kind.mode and k.name != kind.name]
    if clash and not override:
        raise ValueError(f"refit kind {kind.name!r}: evidence mode {kind.mode!r} is refit "
                         f"kind {clash[0]!r}'s; choose another mode")
    return REFIT_KINDS.register(kind.name, kind, override=override)


def _ordered() -> list[RefitKind]:
    return sorted(REFIT_KINDS.values(), key=lambda k: k.rank)  # stable: ties keep order


def kind_names() -> tuple[str, ...]:
    """Every kind's name, in table order (help texts, error messages)."""
    return tuple(k.name for k in _ordered())


def default_kinds() -> tuple[str, ...]:
    """The kinds tuned and shown when nothing says which (``--kinds``, the demo)."""
    return tuple(k.name for k in _ordered() if k.default)


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


def _twins(kind: RefitKind) -> tuple[EvidenceMode, EvidenceMode, EvidenceMode]:
    return (EvidenceMode(kind.mode, kind.row, kind.name, False),
            EvidenceMode(f"{kind.mode}_prune", f"{kind.row}-Pr", kind.name, True),
            EvidenceMode(f"{kind.mode}_soft_prune", f"{kind.row}-SPr", kind.name, True,
                         soft=True))


def _modes() -> dict[str, EvidenceMode]:
    """The table's order: the seed's (none, prune, the default kinds' rows, then their
    pruned rows), the soft rows of those, then every other kind's three rows."""
    seed = [_twins(k) for k in _ordered() if k.default]
    modes = [EvidenceMode("none", "DL-MT", None, False),
             EvidenceMode("prune", "DL-MT-Pr", None, True),
             *(t[0] for t in seed), *(t[1] for t in seed),
             EvidenceMode("soft_prune", "DL-MT-SPr", None, True, soft=True),
             *(t[2] for t in seed)]
    for kind in _ordered():
        if not kind.default:
            modes += _twins(kind)
    return {m.name: m for m in modes}


class _Modes(Mapping[str, EvidenceMode]):
    """``EVIDENCE_MODES``: derived from the registry on each use, so a kind registered
    later (a user's module) has its rows too."""

    def _current(self) -> dict[str, EvidenceMode]:
        return _modes()

    def __getitem__(self, name: str) -> EvidenceMode:
        return self._current()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())


EVIDENCE_MODES: Mapping[str, EvidenceMode] = _Modes()


def table_modes(kinds: Sequence[str]) -> tuple[str, ...]:
    """The seed's rows (not soft) of ``kinds`` and those without a refit, in table order."""
    return tuple(m.name for m in EVIDENCE_MODES.values()
                 if not m.soft and (m.kind is None or m.kind in kinds))


def refit_kind(name: str, flag: str = "--kinds") -> RefitKind:
    """The kind ``name``; an unknown one is an error naming ``flag`` ("": none) and the
    known kinds."""
    return REFIT_KINDS.get(name, flag)


def mode_of(kind: str, prune: bool, soft: bool = False) -> str:
    """The evidence mode of a kind's row, pruned or not (``soft``: its soft-pruned row)."""
    return REFIT_KINDS[kind].mode + ("_soft_prune" if soft else "_prune" if prune else "")

