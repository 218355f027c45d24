"""DL-LAT: an additive offset on the family's latent feature (``latent_feature``) with an
L2 term on it; the weights stay as trained."""

from deeplab_ext.run.refit_kinds import RefitKind, register_refit_kind

register_refit_kind(RefitKind(
    "latent", "latent", "DL-LAT", "steps", ("steps", "alpha"),
    (("steps", (5, 10, 20)), ("alpha", (1e-3, 0.1, 0.0))),
    lambda ev: dict(steps=ev.steps, alpha=ev.alpha, early_stopping=False),
    refit_mode="latent", rank=2))
