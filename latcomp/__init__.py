"""latcomp: real-time, label-free image composition with GANs through latent-space regression.

pixels with holes -> E -> latent -> G -> pixels (Chai, Wulff, Isola, ICLR 2021).
"""

__version__ = "0.1.0"
