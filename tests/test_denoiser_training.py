"""Denoiser training: objective pieces, the loss going down on a tiny model, resume (step, optimizer, EMA), export,
the image-condition path through the VAE, and padded-latent masking."""
import copy
import os

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from conftest import DATA
from opensora.data.datasets import OpenSoraDataModule
from opensora.training.grad_clip import AdaptiveGradClip
from opensora.models import OpenSoraT2V
from opensora.training.denoiser import DenoiserTraining, bias_timesteps, min_snr_weight, stratified_timesteps
from opensora.training.offline import export, main
from wfvae.training.module import lr_multiplier

ROOT = os.path.join(os.path.dirname(__file__), "..")
CONFIG = dict(num_attention_heads=2, attention_head_dim=12, cross_attention_dim=24, in_channels=4, out_channels=4,
              num_layers=2, caption_channels=8, sparse1d=False)



def latent_batch(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"latents": torch.randn(b, 4, 3, 8, 8, generator=g), "text_embeds": torch.randn(b, 3, 8, generator=g),
            "text_mask": torch.ones(b, 3)}


def test_min_snr_weight_and_stratified_timesteps():
    snr = torch.tensor([0.0, 1.0, 5.0, 100.0])
    assert torch.allclose(min_snr_weight(snr, 5.0), torch.tensor([0.0, 0.5, 5 / 6, 5 / 101]))
    assert torch.equal(min_snr_weight(snr, None), torch.ones(4))
    g = torch.Generator().manual_seed(0)
    t = torch.cat([stratified_timesteps(4, rank, 2, generator=g) for rank in range(2)])
    assert ((t >= torch.arange(8) * 125) & (t < (torch.arange(8) + 1) * 125)).all()


def test_timestep_bias_favours_the_named_portion_and_keeps_strata():
    u = (torch.arange(100000, dtype=torch.float64) + 0.5) / 100  # uniform grid over [0, 1000)
    assert torch.equal(bias_timesteps(u, "none", 3.0), u) and torch.equal(bias_timesteps(u, "later", 1.0), u)
    later = bias_timesteps(u, "later", 3.0, 0.5)
    assert (later.diff() > 0).all() and later.min() >= 0 and later.max() < 1000           # monotone: strata kept
    assert abs((later >= 500).double().mean().item() - 0.75) < 1e-3                      # 3 * 0.5 / (0.5 + 3 * 0.5)
    # density ratio 3 between the two halves, each half uniform inside
    assert abs((later >= 750).double().mean().item() - 0.375) < 1e-3
    earlier = bias_timesteps(u, "earlier", 4.0, 0.25)
    assert abs((earlier < 250).double().mean().item() - 4 * 0.25 / (0.75 + 4 * 0.25)) < 1e-3
    module = DenoiserTraining(model_config=CONFIG, timestep_bias_strategy="later", timestep_bias_multiplier=3.0,
                              timestep_bias_portion=0.5, ema_decay=None)
    t = module.timesteps(4000)
    assert abs((t >= 500).float().mean().item() - 0.75) < 1e-3                           # stratified: exact-ish
    with pytest.raises(ValueError, match="timestep_bias_strategy"):
        DenoiserTraining(model_config=CONFIG, timestep_bias_strategy="middle", timestep_bias_multiplier=2.0)
    with pytest.raises(ValueError, match="portion"):
        bias_timesteps(u, "later", 2.0, 1.5)


def test_lr_multiplier_warms_up_then_anneals():
    assert [lr_multiplier(s, 4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    cos = [lr_multiplier(s, 2, "cosine", 12, 0.1) for s in range(14)]
    assert cos[:3] == [0.5, 1.0, 1.0] and abs(cos[7] - 0.55) < 1e-12 and cos[12] == cos[13] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(cos[2:], cos[3:]))                 # never rises after the warm-up
    assert lr_multiplier(50, 2, "cosine", -1, 0.1) == 1.0                  # no max_steps: stays constant
    with pytest.raises(ValueError, match="lr schedule"):
        DenoiserTraining(model_config=CONFIG, lr_schedule="linear")


def test_cosine_schedule_reaches_the_floor_at_max_steps(tmp_path):
    seen = []

    class Lrs(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    module = DenoiserTraining(model_config=CONFIG, lr=1e-3, ema_decay=None, warmup_steps=2, lr_schedule="cosine",
                              min_lr_ratio=0.1)
    trainer = L.Trainer(accelerator="cpu", max_steps=6, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[Lrs()])
    trainer.fit(module, DataLoader(Latents(), batch_size=2))
    assert seen == pytest.approx([1e-3 * lr_multiplier(s, 2, "cosine", 6, 0.1) for s in range(6)])
    assert seen[:3] == pytest.approx([5e-4, 1e-3, 1e-3]) and seen[5] < seen[4] < seen[3] < seen[2]
    assert trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == pytest.approx(1e-4)


@pytest.mark.parametrize("objective,inpaint", [("v", False), ("flow", False), ("v", True)])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(objective, inpaint):
    module = DenoiserTraining(model_config=CONFIG, inpaint=inpaint, objective=objective, lr=2e-3, ema_decay=None,
                              snr_gamma=None if objective == "flow" else 5.0)
    optimizer = module.configure_optimizers()["optimizer"]
    batch, losses = latent_batch(), []
    for _ in range(20):
        torch.manual_seed(0)  # same noise and timesteps every step
        loss = module.diffusion_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.75 * losses[0], losses


def test_padded_latents_do_not_count():
    module = DenoiserTraining(model_config=CONFIG, ema_decay=None).eval()
    batch = latent_batch()
    batch["latent_mask"] = torch.ones(2, 3, 8, 8)
    batch["latent_mask"][..., 4:] = 0  # right half is padding (whole patches)
    changed = {**batch, "latents": batch["latents"].clone()}
    changed["latents"][..., 4:] = 100.0
    losses = []
    for b in (batch, changed):
        torch.manual_seed(1)
        with torch.no_grad():
            losses.append(float(module.diffusion_loss(b)))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


class Latents(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {k: v[0] for k, v in latent_batch(1, seed=i).items()}


class Snapshot(L.Callback):
    """What the module holds when training (re)starts."""

    def on_train_start(self, trainer, module):
        self.step = trainer.global_step
        self.ema = {k: v.clone() for k, v in module.ema.module.state_dict().items()}
        self.model = {k: v.clone() for k, v in module.model.state_dict().items()}
        self.optimizer = copy.deepcopy(trainer.optimizers[0].state_dict())


def fit(tmp_path, max_steps, ckpt_path=None):
    torch.manual_seed(0)
    module = DenoiserTraining(model_config=CONFIG, lr=1e-3, ema_decay=0.5)
    snap, clip = Snapshot(), AdaptiveGradClip(warmup=1, log=False)
    trainer = L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
                        callbacks=[snap, clip, L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt",
                                                                                    save_last=True)])
    trainer.fit(module, DataLoader(Latents(), batch_size=2), ckpt_path=ckpt_path)
    return module, trainer, snap, clip


# a plain DataLoader built by the test (tests/test_resume.py covers the resumable training loaders)
@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
def test_resume_restores_step_optimizer_and_ema_then_export(tmp_path):
    module, trainer, snap, _ = fit(tmp_path, 3)
    assert trainer.global_step == 3
    assert not torch.equal(module.ema.module.pos_embed.proj.weight, snap.ema["pos_embed.proj.weight"])  # EMA moved
    assert not torch.equal(module.ema.module.pos_embed.proj.weight, module.model.pos_embed.proj.weight)
    ema = {k: v.clone() for k, v in module.ema.module.state_dict().items()}
    model = {k: v.clone() for k, v in module.model.state_dict().items()}
    ckpt = str(tmp_path / "ckpt" / "last.ckpt")
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert not any(k.startswith("vae.") for k in saved["state_dict"])

    resumed, trainer2, snap2, clip2 = fit(tmp_path, 5, ckpt_path=ckpt)
    assert snap2.step == 3 and trainer2.global_step == 5
    assert all(torch.equal(snap2.ema[k], ema[k]) for k in ema)
    assert all(torch.equal(snap2.model[k], model[k]) for k in model)
    restored = snap2.optimizer["state"]
    assert restored and all(float(s["step"]) == 3 for s in restored.values())
    assert clip2.count >= 3  # clipping statistics came back with the checkpoint

    out = tmp_path / "export"
    export(str(tmp_path / "ckpt" / "last.ckpt"), str(out))
    loaded = OpenSoraT2V.from_pretrained(str(out))
    assert all(torch.equal(v, resumed.ema.module.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert main(["export", str(tmp_path / "missing.ckpt"), str(tmp_path / "e2")]) == 2
    assert main(["export", ckpt, str(out)]) == 2  # the folder holds the first export: --overwrite needed
    assert main(["export", ckpt, str(out), "--overwrite"]) == 0
    torch.save({"not": "a checkpoint"}, str(tmp_path / "junk.ckpt"))
    assert main(["export", str(tmp_path / "junk.ckpt"), str(tmp_path / "new" / "e3")]) == 2
    assert not (tmp_path / "new").exists() and not (tmp_path / "e2").exists()  # failed runs leave no folder
    assert main(["export", ckpt, str(tmp_path / "t2v"), "--to-t2v"]) == 2  # a text-to-video run: nothing to fold


def test_export_to_t2v_folds_an_image_condition_run(tmp_path):
    from opensora.models import OpenSoraInpaint

    config = {**CONFIG, "in_channels": 8, "out_channels": 8}
    module = DenoiserTraining(model_config=config, inpaint=True, ema_decay=None, t2iv_condition="zero")
    with torch.no_grad():
        for p in module.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ckpt = tmp_path / "run.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, str(ckpt))
    assert main(["export", str(ckpt), str(tmp_path / "t2v"), "--to-t2v"]) == 0
    assert main(["export", str(ckpt), str(tmp_path / "cont")]) == 0
    t2v, cont = OpenSoraT2V.from_pretrained(str(tmp_path / "t2v")), OpenSoraInpaint.from_pretrained(str(tmp_path / "cont"))
    assert type(t2v) is OpenSoraT2V
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(1, 8, 3, 8, 8, generator=g), torch.randn(1, 3, 8, generator=g)
    t = torch.tensor([500.0])
    with torch.no_grad():
        a = t2v(x, t, text).sample
        b = cont(torch.cat([x, torch.zeros_like(x), torch.ones(1, 4, 3, 8, 8)], dim=1), t, text).sample
    assert (a - b).abs().max() < 1e-5
    hp = dict(module.hparams, t2iv_condition="encoded")
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hp}, str(ckpt))
    assert main(["export", str(ckpt), str(tmp_path / "t2v2"), "--to-t2v"]) == 2


def test_image_condition_model_trains_on_videos_through_the_vae():
    dm = OpenSoraDataModule(data=os.path.join(ROOT, "configs", "opensora", "tiny_data.json"), num_frames=5, fps=8,
                            max_tokens=8, min_tokens=4, batch_size=1, num_workers=0, mask_mix="release")
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    config = {**CONFIG, "in_channels": 8, "out_channels": 8}
    module = DenoiserTraining(model_config=config, inpaint=True, vae=os.path.join(DATA, "wfvae_tiny"),
                              ema_decay=0.9)
    torch.manual_seed(0)
    loss = module.diffusion_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    grads = module.model.pos_embed_mask[1].weight.grad  # zero-initialised condition projection gets a gradient
    assert grads is not None and grads.abs().sum() > 0
    assert all(p.grad is None for p in module.vae.parameters())


def test_latent_cache_round_trip(tmp_path):
    from opensora.training.offline import write_latent_cache

    dm = OpenSoraDataModule(data=os.path.join(ROOT, "configs", "opensora", "tiny_data.json"), num_frames=5, fps=8,
                            max_tokens=8, min_tokens=4, batch_size=2, num_workers=0, mask_mix="release",
                            caption_dropout=0.0)
    dm.setup()
    config = {**CONFIG, "in_channels": 8, "out_channels": 8}
    module = DenoiserTraining(model_config=config, inpaint=True, vae=os.path.join(DATA, "wfvae_tiny"), ema_decay=None)
    assert write_latent_cache(module, dm.train_dataloader(), str(tmp_path / "cache")) == 2
    cached = OpenSoraDataModule(cache=str(tmp_path / "cache"), batch_size=2, num_workers=0)
    cached.setup()
    batches = list(cached.train_dataloader())
    assert sum(len(b["latents"]) for b in batches) == 2
    batch = batches[0]
    assert batch["latents"].shape[1] == 8 and batch["compressed_mask"].shape[1] == 4
    assert batch["masked_latents"].shape == batch["latents"].shape
    assert torch.isfinite(module.diffusion_loss(batch))


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for flag in (False, True):
        module = DenoiserTraining(model_config=CONFIG, gradient_checkpointing=flag, ema_decay=None).train()
        assert module.model.gradient_checkpointing is flag
        torch.manual_seed(0)
        module.diffusion_loss(latent_batch()).backward()
        grads.append(module.model.proj_out.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


@pytest.mark.parametrize("t2iv_condition", ["encoded", "zero"])
def test_condition_latents_black_frames_and_the_t2iv_option(t2iv_condition):
    """Generated frames of the masked video are black (-1) before encoding, as the release masks uint8 pixels;
    with t2iv_condition="zero" a sample that keeps nothing gets a zero latent, the others are unchanged."""
    config = {**CONFIG, "in_channels": 8, "out_channels": 8}
    module = DenoiserTraining(model_config=config, inpaint=True, vae=os.path.join(DATA, "wfvae_tiny"),
                              ema_decay=None, t2iv_condition=t2iv_condition)
    g = torch.Generator().manual_seed(0)
    video = torch.rand(2, 3, 5, 16, 16, generator=g) * 2 - 1
    mask = torch.ones(2, 1, 5, 16, 16)
    mask[0, :, :1] = 0                                  # sample 0 keeps frame 0 (i2v), sample 1 keeps nothing
    latents = module.encode_video(video)
    seen = []
    real = module.encode_video
    module.encode_video = lambda x: (seen.append(x.clone()), real(x))[1]
    with torch.random.fork_rng():
        torch.manual_seed(1)
        cond = module.conditions_of({"video": video, "mask": mask}, latents)
    masked = seen[0]
    assert (masked[0, :, 1:] == -1).all() and (masked[1] == -1).all()
    assert (masked[0, :, :1] - video[0, :, :1]).abs().max() < 0.5   # kept frame: the video (plus condition noise)
    c = latents.shape[1]
    if t2iv_condition == "zero":
        assert not cond[1, :c].any()
    else:  # the (sampled) latent of the all-black video
        assert cond[1, :c].abs().sum() > 0
    assert cond[0, :c].abs().sum() > 0 and (cond[1, c:] == 1).all()
    with pytest.raises(ValueError, match="t2iv_condition"):
        DenoiserTraining(model_config=config, inpaint=True, t2iv_condition="none")


def test_link_conditioned_items_drops_the_text_to_video_samples(tmp_path, capsys):
    """``python -m opensora.training link-conditioned SRC DST``: the items of an image-condition cache that keep a
    frame, linked into DST (sub-folders kept); items that keep nothing (t2iv) are left out."""
    from opensora.data.datasets import save_cache_item
    from opensora.training.offline import link_conditioned_items, main

    src = tmp_path / "cache"
    kept = torch.ones(4, 2, 2, 2)
    kept[:, 0] = 0                                        # latent frame 0 kept (i2v)
    for i, mask in enumerate([torch.ones(4, 2, 2, 2), kept, torch.ones(4, 2, 2, 2), kept]):
        save_cache_item(str(src / ("sub" if i % 2 else "") / f"{i:08d}.safetensors"), latents=torch.randn(8, 2, 2, 2),
                        compressed_mask=mask)
    assert main(["link-conditioned", str(src), str(tmp_path / "out")]) == 0
    linked = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.safetensors"))
    assert linked == ["sub/00000001.safetensors", "sub/00000003.safetensors"]
    assert "2 items that keep a frame" in capsys.readouterr().out
    save_cache_item(str(tmp_path / "t2v" / "0.safetensors"), latents=torch.randn(8, 2, 2, 2))
    with pytest.raises(ValueError, match="not an image-condition cache"):
        link_conditioned_items(str(tmp_path / "t2v"), str(tmp_path / "out2"))
    assert main(["link-conditioned", str(tmp_path / "missing"), str(tmp_path / "out3")]) == 2
    assert main(["link-conditioned", str(tmp_path / "t2v"), str(tmp_path / "out4")]) == 2
    err = capsys.readouterr().err
    assert "cache folder not found" in err and "not an image-condition cache" in err
