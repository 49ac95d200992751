"""Evaluation of bundles on held-out procedural faces: the engine and naive fills need no torch; the
optimisers (inversion) and the regressor features do, and import it when used."""
