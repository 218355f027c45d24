"""The built-in refit kinds, one file each (``run.refit_kinds.REFIT_KINDS`` discovers
them): adding a kind is adding a file here that calls ``register_refit_kind``."""
