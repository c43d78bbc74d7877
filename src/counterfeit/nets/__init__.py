"""Network building blocks: generators, discriminators, normalisation and initialisation."""

from counterfeit.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from counterfeit.nets.init import init_weights
from counterfeit.nets.mlp import MLP
from counterfeit.nets.norm import NORM_KINDS, make_norm
from counterfeit.nets.patchgan import PatchDiscriminator, receptive_field
from counterfeit.nets.resnet import ResnetBlock, ResnetGenerator
from counterfeit.nets.unet import UNetGenerator

__all__ = [
    "DCGANDiscriminator",
    "DCGANGenerator",
    "MLP",
    "NORM_KINDS",
    "PatchDiscriminator",
    "ResnetBlock",
    "ResnetGenerator",
    "UNetGenerator",
    "init_weights",
    "make_norm",
    "receptive_field",
]
