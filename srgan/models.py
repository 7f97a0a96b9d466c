"""The networks of SRGAN (Ledig et al., CVPR 2017, arXiv 1609.04802, Fig. 4).

``SRResNet`` is the generator shared by SRResNet (trained with MSE) and SRGAN
(trained with the perceptual loss). ``Discriminator`` is the paper's VGG-style
classifier of 96x96 HR patches.

Ranges: the generator takes LR images in [0, 1] and returns HR images in
[-1, 1] (the paper scales HR targets to [-1, 1]); ``to_unit_range`` maps an
output back to [0, 1]. The discriminator takes HR-range images in [-1, 1] and
returns one logit per image (the loss applies the sigmoid).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class ResidualBlock(nn.Module):
    """conv3x3 - BN - PReLU - conv3x3 - BN, plus the identity."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class UpsampleBlock(nn.Module):
    """conv3x3 to 4x channels, PixelShuffle x2 (sub-pixel convolution), PReLU."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.PReLU(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.shuffle(self.conv(x)))


class SRResNet(nn.Module):
    """The paper's generator: 4x super-resolution with 16 residual blocks.

    Args (keyword-only):
        num_blocks: residual blocks in the body (paper: 16).
        channels: feature channels (paper: 64).
        scale: upscaling factor, a power of two (paper: 4, two x2 stages).
    """

    def __init__(self, *, num_blocks: int = 16, channels: int = 64, scale: int = 4) -> None:
        super().__init__()
        if scale < 2 or scale & (scale - 1):
            raise ValueError(f"scale must be a power of two >= 2, got {scale}")
        self.scale = scale
        self.conv_first = nn.Sequential(nn.Conv2d(3, channels, 9, padding=4), nn.PReLU(channels))
        self.body = nn.Sequential(*(ResidualBlock(channels) for _ in range(num_blocks)))
        self.conv_body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        )
        self.upsample = nn.Sequential(*(UpsampleBlock(channels) for _ in range(scale.bit_length() - 1)))
        self.conv_last = nn.Conv2d(channels, 3, 9, padding=4)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.25, nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # Residual branches start small so the 16-block stack begins near identity.
        for block in self.body:
            block.conv2.weight.data.mul_(0.1)
        self.conv_last.weight.data.mul_(0.1)

    def forward(self, lr: Tensor) -> Tensor:
        """LR in [0, 1] -> HR in [-1, 1] (not clamped)."""
        features = self.conv_first(lr)
        x = self.conv_body(self.body(features)) + features
        return self.conv_last(self.upsample(x))


def to_unit_range(hr: Tensor) -> Tensor:
    """Map a generator output from [-1, 1] to [0, 1], clamped."""
    return ((hr + 1) * 0.5).clamp_(0, 1)


class Discriminator(nn.Module):
    """The paper's discriminator: eight conv layers (64 to 512 features, strided
    to 6x6 for a 96x96 input), Dense 1024, LeakyReLU, Dense 1 (a logit).

    Args (keyword-only):
        image_size: side of the square input (paper: 96); must divide by 16.
        channels: features of the first conv (paper: 64).
    """

    def __init__(self, *, image_size: int = 96, channels: int = 64) -> None:
        super().__init__()
        if image_size % 16:
            raise ValueError(f"image_size must divide by 16, got {image_size}")
        c = channels
        # (out_channels, stride) of the seven conv-BN-LeakyReLU blocks.
        plan = [(c, 2), (2 * c, 1), (2 * c, 2), (4 * c, 1), (4 * c, 2), (8 * c, 1), (8 * c, 2)]
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        in_ch = c
        for out_ch, stride in plan:
            layers += [
                nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        side = image_size // 16
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_ch * side * side, 1024),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(1024, 1),
        )

    def forward(self, hr: Tensor) -> Tensor:
        """HR-range images (N, 3, S, S) in [-1, 1] -> logits (N,)."""
        return self.classifier(self.features(hr)).squeeze(1)


def _conv_with_batch_norm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One conv computing bn(conv(x)) with BN's running statistics (eval mode), made in float64."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                      padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True)
    fused = fused.to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(conv.weight.double() * scale[:, None, None, None])
        fused.bias.copy_((bias - bn.running_mean.double()) * scale + bn.bias.double())
    return fused


def fold_batch_norm(generator: SRResNet) -> SRResNet:
    """An inference copy of ``generator`` with every BatchNorm merged into the conv before it.

    Same outputs as ``generator.eval()`` (to float rounding) with 33 fewer passes over the
    feature maps; on a CPU in bf16 the BN passes were 13% of the time. Not for training: BN's
    statistics are gone, and the state dict's names differ from the weights files'.
    """
    folded = copy.deepcopy(generator).eval()
    for block in folded.body:
        block.conv1, block.bn1 = _conv_with_batch_norm(block.conv1, block.bn1), nn.Identity()
        block.conv2, block.bn2 = _conv_with_batch_norm(block.conv2, block.bn2), nn.Identity()
    conv, bn = folded.conv_body
    folded.conv_body = nn.Sequential(_conv_with_batch_norm(conv, bn), nn.Identity())
    return folded


def srresnet_x4() -> SRResNet:
    """The paper's generator with its default hyperparameters."""
    return SRResNet(num_blocks=16, channels=64, scale=4)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
