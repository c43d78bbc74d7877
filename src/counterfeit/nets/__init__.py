"""Network building blocks: generators, discriminators, normalisation and initialisation."""

from counterfeit.nets.crn import CascadedRefinementNetwork, RefinementModule
from counterfeit.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from counterfeit.nets.init import init_weights
from counterfeit.nets.mlp import MLP
from counterfeit.nets.norm import NORM_KINDS, make_norm
from counterfeit.nets.patchgan import PatchDiscriminator, receptive_field
from counterfeit.nets.resnet import ResnetBlock, ResnetGenerator
from counterfeit.nets.unet import UNetGenerator
from counterfeit.nets.vgg import VGG19Features, load_vgg19_weights

__all__ = [
    "CascadedRefinementNetwork",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "MLP",
    "NORM_KINDS",
    "PatchDiscriminator",
    "RefinementModule",
    "ResnetBlock",
    "ResnetGenerator",
    "UNetGenerator",
    "VGG19Features",
    "init_weights",
    "load_vgg19_weights",
    "make_norm",
    "receptive_field",
]
