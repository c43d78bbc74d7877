"""counterfeit: adversarial image synthesis.

A generator counterfeits data, a discriminator polices it. Capabilities:
GAN fundamentals and the 2D toy lab, DCGAN image generation, MR->CT synthesis
(CycleGAN and a paired baseline), and cascaded refinement networks for
layout->image synthesis.
"""

__version__ = "0.1.0"
