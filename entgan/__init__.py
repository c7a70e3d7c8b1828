"""EntGAN: edge-cloud collaborative GAN training with a lifelong library of generators."""

__version__ = "0.1.0"
