"""LPIPS (Zhang et al. 2018, VGG16 variant): the published WF-VAE perceptual loss, and an evaluation metric.

Images (N, 3, H, W) in [-1, 1] are shifted/scaled to ImageNet statistics, passed through VGG16's convolutional
features, and at the five ``relu*_*`` taps the channel-normalised features of both images are subtracted, squared,
weighted per channel by a learned 1x1 head, averaged over positions and summed over taps -> (N,) distances.

Two weight files are needed; nothing is downloaded:

* ``vgg16-397923af.pth``: torchvision's ImageNet VGG16 (``torchvision.models.VGG16_Weights.IMAGENET1K_V1``);
* ``vgg.pth``: the LPIPS v0.1 linear heads (``lin0.model.1.weight`` ... ``lin4.model.1.weight``), from the
  ``lpips`` package (``lpips/weights/v0.1/vgg.pth``) or taming-transformers' ``vgg_lpips``.

They are looked up at the given paths, else in the torch hub cache ``$TORCH_HOME/hub/checkpoints`` (default
``~/.cache/torch/hub/checkpoints``). ``LPIPS(pretrained=False)`` builds the same network with RANDOM weights: random
features, for tests only; its numbers mean nothing.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn as nn

BACKBONE_FILE = "vgg16-397923af.pth"
HEADS_FILE = "vgg.pth"
CHANNELS = (64, 128, 256, 512, 512)
_TAPS = (4, 9, 16, 23, 30)  # end indices of the VGG16 feature slices (after relu1_2, 2_2, 3_3, 4_3, 5_3)


def hub_checkpoint_dir() -> str:
    """``$TORCH_HOME/hub/checkpoints`` (torch's default cache folder for downloaded weights)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def find_weight_file(name: str, path: Optional[str] = None) -> str:
    """``path`` if given (must exist), else ``name`` in the torch hub cache; FileNotFoundError says where to put it."""
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"LPIPS weight file not found: {path}")
        return path
    candidate = os.path.join(hub_checkpoint_dir(), name)
    if os.path.isfile(candidate):
        return candidate
    raise FileNotFoundError(
        f"LPIPS needs {name}, which is not in {hub_checkpoint_dir()}. Copy it there (or pass its path: "
        f"lpips_weights= for vgg.pth, lpips_backbone= for vgg16-397923af.pth), or train with "
        f"'perceptual: msssim' / 'perceptual: none'. ({BACKBONE_FILE}: torchvision's ImageNet VGG16; "
        f"{HEADS_FILE}: the LPIPS v0.1 VGG heads from the lpips package.)")


class LPIPS(nn.Module):
    """LPIPS-VGG distance; ``forward`` returns the mean over the batch, :meth:`distance` the (N,) values.

    Args:
        pretrained: load the two weight files (see the module docstring). ``False``: random features, for tests only.
        heads_path, backbone_path: explicit paths of ``vgg.pth`` and ``vgg16-397923af.pth``.
    """

    name = "lpips"

    def __init__(self, pretrained: bool = True, heads_path: Optional[str] = None,
                 backbone_path: Optional[str] = None):
        super().__init__()
        from torchvision.models import vgg16

        if pretrained:  # locate both files before building anything, so a missing file fails fast
            backbone_path = find_weight_file(BACKBONE_FILE, backbone_path)
            heads_path = find_weight_file(HEADS_FILE, heads_path)
        features = vgg16(weights=None).features
        if pretrained:
            state = torch.load(backbone_path, map_location="cpu", weights_only=True)
            features.load_state_dict({k[len("features."):]: v for k, v in state.items()
                                      if k.startswith("features.")})
        bounds = (0,) + _TAPS
        self.slices = nn.ModuleList(nn.Sequential(*[features[i] for i in range(a, b)])
                                    for a, b in zip(bounds[:-1], bounds[1:]))
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        if pretrained:
            self._load_heads(torch.load(heads_path, map_location="cpu", weights_only=True))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        for m in self.modules():  # in-place ReLUs would break double use of the tapped features
            if isinstance(m, nn.ReLU):
                m.inplace = False
        self.requires_grad_(False)
        self.eval()

    def _load_heads(self, state: dict) -> None:
        for k, head in enumerate(self.heads):
            keys = [key for key in state if key.startswith(f"lin{k}.") and key.endswith("weight")]
            if len(keys) != 1:
                raise ValueError(f"{HEADS_FILE}: expected one lin{k}.*weight tensor, found {keys}")
            head.weight.data.copy_(state[keys[0]].reshape(head.weight.shape))

    def _features(self, x: torch.Tensor) -> list:
        h, taps = (x - self.shift) / self.scale, []
        for s in self.slices:
            h = s(h)
            taps.append(h)
        return taps

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS of each image pair: (N, 3, H, W) x2 in [-1, 1] -> (N,)."""
        total = 0.0
        for fx, fy, head in zip(self._features(x), self._features(y), self.heads):
            fx = fx / (fx.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + head((fx - fy).pow(2)).mean(dim=(1, 2, 3))
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance(x, y).mean()
