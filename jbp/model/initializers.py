"""Moved to :mod:`jbp.layers.initializers` (what layers are made of sits below the model); this
path still names it."""

from jbp.layers.initializers import *  # noqa: F401,F403
