"""Verification: hand-derived gradients against autodiff and finite differences."""
