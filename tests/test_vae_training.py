"""WF-VAE training module: loss decreases, resume restores everything, export round-trips, losses, LPIPS, configs."""
import os
import warnings

import pytest
import torch

from wfvae import WFVAE, WFVAEConfig
from wfvae.training.losses import adaptive_gan_weight, ms_ssim, wavelet_loss
from wfvae.training.module import WFVAETraining, export_checkpoint, load_vae_weights

REPO = os.path.join(os.path.dirname(__file__), "..")
TINY = dict(base_channels=8, latent_dim=4, encoder_energy_flow_hidden_size=8, decoder_energy_flow_hidden_size=8,
            norm_type="layernorm", t_interpolation="trilinear")


def _clip(seed=0, t=5, size=16):
    """A smooth synthetic clip (1, 3, t, size, size) in [-1, 1] with a moving gradient."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    frames = [torch.stack([torch.sin(2 * xx + 0.3 * k), torch.cos(3 * yy - 0.2 * k), xx * yy]) for k in range(t)]
    video = torch.stack(frames, dim=1).unsqueeze(0)
    return (0.8 * video + 0.05 * torch.randn(video.shape, generator=g)).clamp(-1, 1)


def _loader(clip, n=64):
    return torch.utils.data.DataLoader([{"video": clip[0]}] * n, batch_size=1,
                                       collate_fn=lambda s: {"video": torch.stack([x["video"] for x in s])})


def _trainer(tmp_path, max_steps, **kw):
    import lightning as L

    return L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(tmp_path),
                     num_sanity_val_steps=0, limit_val_batches=0, **kw)


def _module(**kw):
    args = dict(vae=WFVAEConfig(**TINY), lr=2e-3, perceptual="msssim", perceptual_weight=0.2, disc_start=None,
                ema_decay=0.9, grad_clip=1.0)
    args.update(kw)
    torch.manual_seed(0)
    return WFVAETraining(**args)


def _rec_error(vae, clip):
    with torch.no_grad():
        return (vae(clip, sample_posterior=False)[0] - clip).abs().mean().item()


def test_few_steps_lower_the_loss(tmp_path):
    clip = _clip()
    module = _module()
    before = _rec_error(module.vae, clip)
    _trainer(tmp_path, 25).fit(module, _loader(clip))
    assert module.global_step == 25
    after = _rec_error(module.vae, clip)
    assert after < 0.8 * before, (before, after)


# a plain DataLoader built by the test (tests/test_resume.py covers the resumable training loaders)
@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
def test_resume_restores_step_optimisers_ema_and_discriminator(tmp_path):
    clip = _clip(1)
    module = _module(disc_start=1, disc_channels=8, disc_layers=2, ema_decay=0.5)
    trainer = _trainer(tmp_path, 6)
    trainer.fit(module, _loader(clip))
    ckpt = str(tmp_path / "run.ckpt")
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)  # plain types only
    assert saved["global_step"] == 6 and len(saved["optimizer_states"]) == 2
    assert any(k.startswith("discriminator.") for k in saved["state_dict"])
    assert any(k.startswith("ema.module.") for k in saved["state_dict"])
    ema_before = {k: v.clone() for k, v in module.ema.state_dict().items()}
    assert any(not torch.equal(ema_before[f"module.{k}"], v) for k, v in module.vae.state_dict().items())

    fresh = _module(disc_start=1, disc_channels=8, disc_layers=2, ema_decay=0.5)
    trainer2 = _trainer(tmp_path, 6)
    trainer2.fit(fresh, _loader(clip), ckpt_path=ckpt)  # max_steps already reached: restore only
    assert trainer2.global_step == 6
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, fresh.state_dict()[name]), name
    for opt_old, opt_new in zip(trainer.optimizers, trainer2.optimizers):
        old, new = opt_old.state_dict(), opt_new.state_dict()
        assert old["param_groups"] == new["param_groups"]
        for i, state in old["state"].items():
            for key, value in state.items():
                assert torch.equal(value, new["state"][i][key])
    # and training goes on from there
    _trainer(tmp_path, 8).fit(fresh, _loader(clip), ckpt_path=ckpt)
    assert fresh.global_step == 8


def test_export_loads_back_with_identical_outputs(tmp_path):
    clip = _clip(2)
    module = _module(ema_decay=0.5)
    trainer = _trainer(tmp_path, 3)
    trainer.fit(module, _loader(clip))
    ckpt = str(tmp_path / "run.ckpt")
    trainer.save_checkpoint(ckpt)
    out = str(tmp_path / "export")
    export_checkpoint(ckpt, out)
    loaded = WFVAE.from_pretrained(out)
    ema = module.ema.module.eval()
    with torch.no_grad():
        assert torch.equal(loaded(clip, sample_posterior=False)[0], ema(clip, sample_posterior=False)[0])
    # the EMA copy differs from the raw weights, and --raw exports those
    raw = load_vae_weights(ckpt, prefer_ema=False)
    assert any(not torch.equal(a, b) for a, b in zip(raw.state_dict().values(), loaded.state_dict().values()))
    # init_from a Lightning checkpoint or an exported folder starts from the EMA weights
    for source in (ckpt, out):
        start = WFVAETraining(vae=WFVAEConfig(**TINY), init_from=source, perceptual="none", disc_start=None)
        assert all(torch.equal(a, b) for a, b in zip(start.vae.state_dict().values(), loaded.state_dict().values()))


def test_export_cli_errors(tmp_path, capsys):
    from tools.export_vae import main

    assert main([str(tmp_path / "missing.ckpt"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_adaptive_weight_is_the_gradient_norm_ratio():
    layer = torch.nn.Parameter(torch.randn(4, 3))
    x = torch.randn(5, 4)
    rec, gan = (x @ layer).pow(2).mean(), -(x @ layer).sin().mean()
    expected = torch.autograd.grad(rec, layer, retain_graph=True)[0].norm() / (
        torch.autograd.grad(gan, layer, retain_graph=True)[0].norm() + 1e-6)
    assert torch.allclose(adaptive_gan_weight(rec, gan, layer, disc_weight=0.5), 0.5 * expected)


def test_loss_helpers():
    a, b = torch.zeros(2, 12, 3, 4, 4), torch.ones(2, 12, 3, 4, 4)
    assert wavelet_loss(a, b, a, 2 * b).item() == pytest.approx(3.0)
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(ms_ssim(x, x), torch.ones(2), atol=1e-5)
    assert (ms_ssim(x, (x + 0.3 * torch.randn_like(x)).clamp(0, 1)) < 0.9).all()
    # small crops use fewer scales and still give finite gradients; too small a crop is refused
    y = torch.rand(2, 3, 16, 24, requires_grad=True)
    (1 - ms_ssim(y, (y.detach() + 0.05).clamp(0, 1))).sum().backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="MS-SSIM"):
        ms_ssim(torch.rand(1, 3, 6, 6), torch.rand(1, 3, 6, 6))


def test_lpips_random_backbone_and_missing_weights(monkeypatch, tmp_path):
    from wfvae.training.lpips import LPIPS

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    net = LPIPS(pretrained=False)  # random features, for tests only
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert net.distance(x, x).abs().max() < 1e-6
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        LPIPS()
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth"):
        WFVAETraining(vae=WFVAEConfig(**TINY), perceptual="lpips", perceptual_weight=1.0)
    WFVAETraining(vae=WFVAEConfig(**TINY), perceptual="lpips", perceptual_weight=0.0)  # unused: no files needed
