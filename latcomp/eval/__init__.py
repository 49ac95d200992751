"""Evaluation of bundles on held-out procedural faces (numpy; runs through latcomp.runtime, no torch)."""
