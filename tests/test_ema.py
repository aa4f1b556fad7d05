"""The one EMA of the project (wfvae.training.ema), used by the VAE and the denoiser trainers."""
import pytest
import torch
from torch import nn

from wfvae.training.ema import ema_copy, ema_weights


def test_ema_copies_then_averages_and_stays_frozen():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = ema_copy(model, 0.9)
    assert not ema.training and not any(p.requires_grad for p in ema.parameters())
    first = [p.detach().clone() for p in model.parameters()]
    ema.update_parameters(model)  # first update: a copy
    assert all(torch.equal(a, b) for a, b in zip(ema.module.parameters(), first))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(2.0)
    ema.update_parameters(model)
    for e, f, m in zip(ema.module.parameters(), first, model.parameters()):
        torch.testing.assert_close(e, 0.9 * f + 0.1 * m)
    torch.testing.assert_close(ema.module[1].running_mean, torch.full((4,), 0.2))  # buffers averaged too
    assert int(ema.n_averaged) == 2


def test_ema_weights_reads_both_checkpoint_layouts():
    w = torch.ones(2)
    assert ema_weights({"ema.module.a": w, "ema.n_averaged": torch.tensor(3), "model.a": 2 * w}) == {"a": w}
    assert ema_weights({"ema.a": w, "model.a": 2 * w}) == {"a": w}  # the earlier plain-copy EMA
    assert ema_weights({"model.a": w}) == {}


@pytest.mark.parametrize("decay", [1.0, -0.1, 2])
def test_bad_decay(decay):
    with pytest.raises(ValueError, match="ema_decay"):
        ema_copy(nn.Linear(2, 2), decay)
