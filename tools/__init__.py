"""Thin absl command-line tools: ``python -m tools.<name>`` in the checkout; installed,
``deeplab-<name>`` (``python -m deeplab_tools.<name>``).

TensorFlow's C++ INFO lines (oneDNN notices and the like) are hidden before TensorFlow is
imported; its warnings and errors still show (set TF_CPP_MIN_LOG_LEVEL=0 to see all).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
