"""Generator and regressor architectures (PyTorch) and their checkpoint loaders.

Generators: `StyleGAN2Generator` (rosinality layout), `ProGANGenerator` (GAN-dissection layout).
Regressors: `ProGANEncoder` (ResNet-18, z head), `StyleGANEncoder` (ResNet-34, w+ head).
"""

from .checkpoint import (
    ARCHS,
    GENERATOR_ARCHS,
    CheckpointError,
    describe,
    detect_arch,
    from_state_dict,
    load,
    model_class,
    save,
)
from .progan import ProGANGenerator
from .projection import project
from .resnet import ProGANEncoder, StyleGANEncoder
from .stylegan2 import StyleGAN2Generator

__all__ = [
    "ARCHS",
    "GENERATOR_ARCHS",
    "CheckpointError",
    "ProGANEncoder",
    "ProGANGenerator",
    "StyleGAN2Generator",
    "StyleGANEncoder",
    "describe",
    "detect_arch",
    "from_state_dict",
    "load",
    "model_class",
    "project",
    "save",
]
