"""Moved to :mod:`jbp.layers.params` (what layers are made of sits below the model); this
path still names it."""

from jbp.layers.params import *  # noqa: F401,F403
