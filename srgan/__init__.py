"""SRGAN (Ledig et al., CVPR 2017): networks, losses, degradation, metrics,
training, evaluation and inference, in plain PyTorch."""

from .imresize import imresize
from .inference import METHODS, Upscaler, downscale, upscale_tensor
from .metrics import psnr_y, ssim_y
from .models import Discriminator, SRResNet, srresnet_x4

__all__ = [
    "METHODS", "Discriminator", "SRResNet", "Upscaler", "downscale", "imresize",
    "psnr_y", "srresnet_x4", "ssim_y", "upscale_tensor",
]
