"""DL-BP-L2: a fixed number of steps with an L2 term to the trained weights (the seed's
default refit); the anchor (``--evidence_anchor``) is shared by every weights kind."""

from deeplab_ext.run.refit_kinds import DEFAULT_KIND, RefitKind, register_refit_kind

register_refit_kind(RefitKind(
    DEFAULT_KIND, "bp_l2", "DL-BP-L2", "steps", ("steps", "alpha"),
    (("steps", (5, 10, 20)), ("alpha", (1e-3, 0.1, 0.0))),
    lambda ev: dict(steps=ev.steps, alpha=ev.alpha),
    rank=0, default=True))
