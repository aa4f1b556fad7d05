"""Structure controller: zero-init equivalence, frame masks, strength, causality, loading/saving, training."""
import importlib.util
import json
import os

import lightning as L
import pytest
import torch

from conftest import DATA
from opensora.synthetic.control_data import SyntheticControlData, SyntheticControlDataset
from opensora.training.controller import StructureControllerTraining, export_controller
from opensora.models import (ControlledDenoiser, OpenSoraInpaint, OpenSoraT2V, OpenSoraT2VConfig, StructureController,
                             StructureControllerConfig, latent_frame_mask)



ROOT = os.path.join(os.path.dirname(__file__), "..")
BASE = dict(num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4, num_layers=4,
            cross_attention_dim=24, caption_channels=16, sparse1d=True, sparse_n=2)
SMALL = dict(num_layers=1, latent_channels=4, downsampler_channels=(4, 8, 8, 8))


def tiny_base(seed=0, **fields):
    torch.manual_seed(seed)
    return OpenSoraT2V(OpenSoraT2VConfig(**{**BASE, **fields})).eval()


def inputs(batch=2, frames=3, size=4, channels=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, channels, frames, size, size, generator=g), torch.tensor([10.0, 700.0][:batch]),
            torch.randn(batch, 1, 5, 16, generator=g), torch.ones(batch, 1, 5))


def control_video(batch=1, frames=9, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size, generator=g) * 2 - 1


def randomize_projectors(controller, seed=2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in controller.projectors.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


# ---------------------------------------------------------------------------------------------- equivalence
def test_fresh_controller_leaves_base_unchanged():
    base = tiny_base()
    model = ControlledDenoiser(base, StructureController.for_base(base, **SMALL)).eval()
    x, t, text, mask = inputs()
    with torch.no_grad():
        expected = base(x, t, text, mask).sample
        assert torch.equal(model(x, t, text, mask, control=control_video()).sample, expected)
        assert torch.equal(model(x, t, text, mask).sample, expected)  # no control at all
        assert torch.equal(base(x, t, text, mask, block_residuals=[None] * 4).sample, expected)


def test_fresh_controller_leaves_inpaint_release_model_unchanged():
    """The hook works for the image-condition controller too (published fixture)."""
    from safetensors.torch import load_file

    folder = os.path.join(DATA, "opensora_inpaint_tiny")
    base, io = OpenSoraInpaint.from_pretrained(folder), load_file(os.path.join(folder, "io.safetensors"))
    controller = StructureController.for_base(base, num_layers=1, latent_channels=4,
                                              downsampler_channels=(4, 4, 4, 4), projector="mlp", inject_every=4)
    model = ControlledDenoiser(base, controller).eval()
    with torch.no_grad():
        out = model(io["video.hidden_states"], io["video.timestep"], io["video.encoder_hidden_states"],
                    io["video.encoder_attention_mask"], control=control_video(frames=9, size=64)).sample
    assert (out - io["video.output"]).abs().max().item() <= 1e-5


def test_residuals_change_base_and_strength_scales_them():
    base = tiny_base()
    controller = StructureController.for_base(base, **SMALL)
    randomize_projectors(controller)
    model = ControlledDenoiser(base, controller).eval()
    x, t, text, mask = inputs()
    c = control_video()
    with torch.no_grad():
        expected = base(x, t, text, mask).sample
        assert (model(x, t, text, mask, control=c).sample - expected).abs().max() > 1e-3
        assert torch.equal(model(x, t, text, mask, control=c, control_strength=0.0).sample, expected)
        full = controller(c, t[:1], None, 1.0).block_residuals
        half = controller(c, t[:1], None, 0.5).block_residuals
    for a, b in zip(full, half):
        assert torch.allclose(a * 0.5, b, atol=1e-6)


def test_stored_control_equals_passed_control_and_cfg_batch():
    base = tiny_base()
    controller = StructureController.for_base(base, **SMALL)
    randomize_projectors(controller)
    model = ControlledDenoiser(base, controller).eval()
    x, t, text, mask = inputs()
    c = control_video()
    with torch.no_grad():
        direct = model(x, t, text, mask, control=c.expand(2, -1, -1, -1, -1), control_strength=0.7).sample
        model.set_control(c, control_strength=0.7)  # batch 1 repeated over the latent batch of 2
        stored = model(x, t, text, mask).sample
        model.set_control(None)
        assert torch.equal(model(x, t, text, mask).sample, base(x, t, text, mask).sample)
    assert torch.allclose(direct, stored, atol=1e-6)


# ---------------------------------------------------------------------------------------------- frame masks
def test_frame_mask_zeroes_residuals_of_free_frames():
    base = tiny_base()
    controller = StructureController.for_base(base, **SMALL, inject_every=2)
    randomize_projectors(controller)
    assert controller.config.injected_blocks() == (0, 2) and len(controller.projectors) == 2
    c = control_video()  # 9 frames -> 3 latent frames, 32x32 -> 4x4 latent -> 2x2 tokens per frame
    with torch.no_grad():
        res = controller(c, torch.tensor([5.0]), torch.tensor([1.0, 0.0, 1.0])).block_residuals
    assert res[1] is None and res[3] is None
    for r in (res[0], res[2]):
        assert r.shape == (1, 12, 24)
        assert (r[:, 4:8] == 0).all() and r[:, :4].abs().sum() > 0 and r[:, 8:].abs().sum() > 0
    with pytest.raises(ValueError, match="frame mask"):
        controller(c, torch.tensor([5.0]), torch.tensor([1.0, 0.0]))


def test_latent_frame_mask():
    frames = torch.zeros(9)
    frames[0] = 1
    assert latent_frame_mask(frames).tolist() == [1.0, 0.0, 0.0]
    frames[6] = 1  # in latent frame 2 (video frames 5..8)
    assert latent_frame_mask(frames).tolist() == [1.0, 0.0, 1.0]
    assert latent_frame_mask(torch.ones(2, 5)).shape == (2, 2)
    with pytest.raises(ValueError):
        latent_frame_mask(torch.ones(8))


# ---------------------------------------------------------------------------------------------- encoder
def test_downsampler_shape_and_temporal_causality():
    base = tiny_base()
    controller = StructureController.for_base(base, **SMALL)
    c = control_video(frames=13, size=32)
    with torch.no_grad():
        grid = controller.downsampler(c)
        assert grid.shape == (1, 4, 4, 4, 4)  # (B, C', 1 + 12/4, 32/8, 32/8)
        changed = c.clone()
        changed[:, :, 5:] = -changed[:, :, 5:]  # frames 5.. belong to latent frames 2 and 3
        other = controller.downsampler(changed)
    assert torch.equal(grid[:, :, :2], other[:, :, :2])
    assert not torch.equal(grid[:, :, 2:], other[:, :, 2:])
    tokens, token_grid = controller.encode_control(c)
    assert tokens.shape == (1, 4 * 2 * 2, 24) and token_grid == (4, 2, 2)
    with pytest.raises(ValueError, match="1 \\+ 4n"):
        controller.encode_control(c[:, :, :12])


def test_mismatched_control_raises():
    base = tiny_base()
    model = ControlledDenoiser(base, StructureController.for_base(base, **SMALL))
    x, t, text, mask = inputs()
    with pytest.raises(ValueError, match="token grid"):
        model(x, t, text, mask, control=control_video(frames=5))
    with pytest.raises(ValueError, match="does not fit"):
        ControlledDenoiser(tiny_base(num_layers=6), model.controller)


def test_init_from_base_and_config_checks():
    base = tiny_base()
    controller = StructureController.for_base(base, **SMALL)
    assert torch.equal(controller.blocks[0].attn1.to_q.weight, base.transformer_blocks[0].attn1.to_q.weight)
    assert torch.equal(controller.adaln_single.linear.weight, base.adaln_single.linear.weight)
    assert not any(p.any() for p in controller.projectors.parameters())
    plain = StructureController.for_base(base, init_from_base=False, timestep_conditioning=False, **SMALL)
    assert plain.adaln_single is None
    with torch.no_grad():
        assert len(plain(control_video()).block_residuals) == 4  # no timestep needed
    with pytest.raises(ValueError, match="projector"):
        StructureControllerConfig(projector="conv")
    with pytest.raises(ValueError, match="downsampler_channels"):
        StructureControllerConfig(downsampler_channels=(4, 8))


def test_save_load_roundtrip(tmp_path):
    base = tiny_base()
    controller = StructureController.for_base(base, **SMALL, projector="mlp")
    randomize_projectors(controller)
    controller.save_pretrained(str(tmp_path))
    with open(tmp_path / "config.json") as fh:
        assert json.load(fh)["_class_name"] == "OpenSoraStructureController"
    again = StructureController.from_pretrained(str(tmp_path))
    assert again.config == controller.config
    c, t = control_video(), torch.tensor([3.0])
    with torch.no_grad():
        for a, b in zip(controller(c, t).block_residuals, again(c, t).block_residuals):
            assert torch.allclose(a, b, atol=1e-6, rtol=0)
    with pytest.raises(FileNotFoundError):
        StructureController.from_pretrained(str(tmp_path / "missing"))


# ---------------------------------------------------------------------------------------------- training
TRAIN_BASE = dict(num_attention_heads=2, attention_head_dim=12, in_channels=8, out_channels=8, num_layers=4,
                  cross_attention_dim=24, caption_channels=32, sparse1d=True, sparse_n=2)
TRAIN_CONTROLLER = dict(num_layers=1, latent_channels=8, downsampler_channels=[8, 8, 8, 8])


def test_training_step_changes_only_controller(tmp_path):
    module = StructureControllerTraining(base_config=TRAIN_BASE, controller=TRAIN_CONTROLLER, lr=1e-2,
                                         export_dir=str(tmp_path / "export"))
    base_before = {k: v.clone() for k, v in module.base.state_dict().items()}
    ctrl_before = {k: v.clone() for k, v in module.controller.state_dict().items()}
    data = SyntheticControlData(samples_per_epoch=4, val_samples=0, batch_size=2)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(module, data)
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimised == {id(p) for p in module.controller.parameters()}
    assert not module.base.training and all(not p.requires_grad for p in module.base.parameters())
    for k, v in module.base.state_dict().items():
        assert torch.equal(v, base_before[k]), k
    after = module.controller.state_dict()
    assert not torch.equal(after["projectors.0.0.weight"], ctrl_before["projectors.0.0.weight"])
    assert not torch.equal(after["blocks.0.attn1.to_q.weight"], ctrl_before["blocks.0.attn1.to_q.weight"])
    exported = StructureController.from_pretrained(str(tmp_path / "export"))
    assert torch.equal(exported.projectors[0][0].weight, after["projectors.0.0.weight"])


def test_checkpoint_excludes_frozen_base_and_exports(tmp_path):
    module = StructureControllerTraining(base_config=TRAIN_BASE, controller=TRAIN_CONTROLLER)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(module, SyntheticControlData(samples_per_epoch=2, val_samples=0, batch_size=2))
    ckpt = str(tmp_path / "c.ckpt")
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert state and all(k.startswith("controller.") for k in state)
    exported = export_controller(ckpt, str(tmp_path / "out"))
    assert torch.equal(exported.projectors[0][0].weight, module.controller.projectors[0][0].weight)
    resumed = StructureControllerTraining.load_from_checkpoint(ckpt)
    assert torch.equal(resumed.base.scale_shift_table, module.base.scale_shift_table)  # rebuilt from the seed


def test_synthetic_dataset_items():
    item = SyntheticControlDataset(length=2, latent_channels=8)[0]
    assert item["video"].shape == item["control"].shape == (3, 9, 32, 32)
    assert item["latents"].shape == (8, 3, 4, 4)
    assert set(item["control"].unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(item["video"], SyntheticControlDataset(length=2, latent_channels=8)[0]["video"])


def test_lightning_cli_config_runs(tmp_path, monkeypatch):
    """``python tools/train.py fit --config configs/opensora/structure_controller_tiny.yaml`` (2 steps)."""
    spec = importlib.util.spec_from_file_location("train_cli", os.path.join(ROOT, "tools", "train.py"))
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    config = os.path.abspath(os.path.join(ROOT, "configs", "opensora", "structure_controller_tiny.yaml"))
    monkeypatch.chdir(tmp_path)  # the config's relative run folders land here
    train.main(["fit", "--config", config, "--trainer.max_steps=2", "--trainer.enable_progress_bar=false",
                "--data.init_args.val_samples=0"])
    controller = StructureController.from_pretrained(str(tmp_path / "runs/structure-controller-tiny/controller"))
    assert controller.config.num_layers == 1
    assert (tmp_path / "runs/structure-controller-tiny/checkpoints/last.ckpt").is_file()


def test_video_batches_are_encoded_and_controlled(tmp_path):
    """Real-data path: a batch with only ``video`` (wfvae.training.VideoDataModule) is VAE-encoded, its canny control
    computed, and the caption defaults to one zero token."""
    from conftest import make_tiny_vae
    from opensora.pipelines.control_signals import canny

    make_tiny_vae().save_pretrained(str(tmp_path / "vae"))
    module = StructureControllerTraining(base_config={**TRAIN_BASE, "in_channels": 4, "out_channels": 4},
                                         controller={**TRAIN_CONTROLLER, "latent_channels": 4},
                                         vae=str(tmp_path / "vae"), control_options={"low_threshold": 50})
    batch = {"video": torch.stack([SyntheticControlDataset(length=2)[i]["video"] for i in range(2)])}
    assert module.latents_of(batch).shape == (2, 4, 3, 4, 4)
    assert torch.equal(module.control_of(batch)[1], canny(batch["video"][1], low_threshold=50))
    loss = module.diffusion_loss(batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert module.controller.projectors[0][0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.base.parameters())
    assert all(p.grad is None for p in module.vae.parameters())
