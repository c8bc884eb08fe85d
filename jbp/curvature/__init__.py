"""Curvature from the backward pass's own factors: the protocol of an optimizer that reads
the backward pass (:mod:`jbp.curvature.backward`) and K-FAC built on it
(:mod:`jbp.curvature.kronecker`, :func:`jbp.kfac`)."""

from jbp.curvature.backward import Backward, reads_backward, sample_targets
from jbp.curvature.kronecker import KFAC, KFACQuad, KFACState, KFACStats, kfac

__all__ = ["Backward", "KFAC", "KFACQuad", "KFACState", "KFACStats", "kfac", "reads_backward", "sample_targets"]
