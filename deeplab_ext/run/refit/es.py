"""DL-BP-ES: refit until every tag agrees with the evidence (by ``es_margin``), at most
``es_steps`` steps."""

from deeplab_ext.run.refit_kinds import RefitKind, register_refit_kind

register_refit_kind(RefitKind(
    "es", "bp_es", "DL-BP-ES", "es_steps", ("es_steps", "es_margin"),
    (("es_steps", (10, 30)), ("es_margin", (0.0, 0.2))),
    # Early stopping is the seed's DL-BP-ES: no L2 term (the step cap and the stopping
    # rule are its regulariser), whatever --evidence_alpha says.
    lambda ev: dict(steps=ev.es_steps, early_stopping=True, margin=ev.es_margin, alpha=0.0),
    rank=1, default=True))
