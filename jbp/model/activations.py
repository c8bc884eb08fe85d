"""Moved to :mod:`jbp.layers.activations` (what layers are made of sits below the model); this
path still names it."""

from jbp.layers.activations import *  # noqa: F401,F403
