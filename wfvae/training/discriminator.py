"""3D PatchGAN discriminator (the published WF-VAE training discriminator's architecture).

Video (B, 3, T, H, W) -> patch logits (B, 1, T', H', W'). Layout: a stride-2 3x3x3 conv with LeakyReLU(0.2); then
``n_layers - 1`` conv + BatchNorm3d + LeakyReLU + Dropout stages doubling the width (capped at 8x ``channels``) and
halving H and W (time only in the first of them); one more such stage at stride 1; a final conv to one channel.
Weights start from N(0, 0.02) (convs) and N(1, 0.02) (norm scales), as in pix2pix.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Conv3d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm3d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class PatchDiscriminator3D(nn.Module):
    """3D PatchGAN. ``n_layers`` 4 and ``channels`` 64 are the published defaults (about 11M parameters)."""

    def __init__(self, in_channels: int = 3, channels: int = 64, n_layers: int = 4, dropout: float = 0.3):
        super().__init__()
        layers = [nn.Conv3d(in_channels, channels, 3, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        width = channels
        for n in range(1, n_layers + 1):
            out = channels * min(2 ** n, 8)
            stride = (2 if n == 1 else 1, 2, 2) if n < n_layers else 1
            layers += [nn.Conv3d(width, out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm3d(out),
                       nn.LeakyReLU(0.2, True), nn.Dropout(dropout)]
            width = out
        layers.append(nn.Conv3d(width, 1, 3, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> logits (B, 1, T', H', W')."""
        return self.main(video)
