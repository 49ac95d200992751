"""Architecture names, importable without torch (the CLI and the serving path read them)."""

GENERATOR_ARCHS = ("stylegan2", "progan")
ENCODER_ARCHS = ("progan-encoder", "stylegan-encoder")
ARCHS = GENERATOR_ARCHS + ENCODER_ARCHS
# the paper's pairing: which regressor predicts which generator's latent
DEFAULT_REGRESSOR = {"stylegan2": "stylegan-encoder", "progan": "progan-encoder"}
