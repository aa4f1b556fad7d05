"""Training resume is exact: a run resumed from a checkpoint ends bitwise equal to the run that was not interrupted.

For the denoiser (videos through the tiny VAE, captions through a tiny T5, caption dropout, random windows), the
WF-VAE (random windows and rates, resize, crop, flip, scene cuts, posterior samples, a discriminator with dropout,
EMA, gradient clipping) and the structure controller (random frame masks), one uninterrupted run of 6 steps (4
batches an epoch) saves a checkpoint after every step. Runs resumed from step 2 (mid-epoch) and step 4 (last batch
of epoch 0, with a data worker process where the first run had none), and a run stopped by ``max_steps=3`` and
resumed from its ``last.ckpt``, must reproduce the weights (EMA and discriminator included), the optimiser,
scheduler and clipping states and every value logged in the remaining steps bitwise (``torch.equal``).
"""
import os
import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from conftest import DATA
from opensora.data.datasets import OpenSoraDataModule
from opensora.training.grad_clip import AdaptiveGradClip
from opensora.training.denoiser import DenoiserTraining
from wfvae import WFVAEConfig
from wfvae.training.data import VideoDataModule
from wfvae.training.resume import ResumableBatchSampler, ResumableLoader, derive_seed
from wfvae.training.module import WFVAETraining
from wfvae.io.video import VideoWriter, write_image

ROOT = os.path.join(os.path.dirname(__file__), "..")
TINY_DATA = os.path.join(ROOT, "configs", "opensora", "tiny_data.json")
STEPS = 6  # both trainers: 4 batches per epoch, so step 2 is mid-epoch and step 4 the end of epoch 0


# ---------------------------------------------------------------------------------------------- harness
def fit(module, data, folder, max_steps, ckpt_path=None, every_step=False):
    """Train; returns what the comparison needs. ``every_step``: a checkpoint after every step in ``folder``
    (``step=K.ckpt``), else ``folder/last.ckpt`` when training ends."""
    logged, step = [], [None]
    log = module.log

    def recording_log(name, value, *args, **kwargs):  # (global step at the start of the batch, name, value)
        value = value.detach().clone() if torch.is_tensor(value) else torch.tensor(float(value))
        logged.append((step[0], name, value))
        return log(name, value, *args, **kwargs)

    class BatchStart(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            step[0] = trainer.global_step

    module.log = recording_log
    checkpoint = (ModelCheckpoint(dirpath=folder, filename="{step}", every_n_train_steps=1, save_top_k=-1)
                  if every_step else ModelCheckpoint(dirpath=folder, save_last=True, save_top_k=0))
    clip = AdaptiveGradClip(warmup=1)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        default_root_dir=str(folder), callbacks=[BatchStart(), clip, checkpoint])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    assert not [w for w in caught if "not resumable" in str(w.message)]
    assert trainer.global_step == max_steps
    return {"module": module, "trainer": trainer, "logged": logged, "clip": clip.state_dict()}


def assert_same_end(full, resumed, from_step):
    """Weights (EMA and discriminator included), optimiser, scheduler and clipping states, and the values logged
    from step ``from_step`` on: all bitwise equal."""
    a, b = full["module"].state_dict(), resumed["module"].state_dict()
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    opt_a, opt_b = full["trainer"].optimizers, resumed["trainer"].optimizers
    assert len(opt_a) == len(opt_b)
    for x, y in zip(opt_a, opt_b):
        x, y = x.state_dict(), y.state_dict()
        assert x["param_groups"] == y["param_groups"] and x["state"].keys() == y["state"].keys()
        for i in x["state"]:
            assert all(torch.equal(x["state"][i][k], y["state"][i][k]) for k in x["state"][i])
    sched_a = [c.scheduler.state_dict() for c in full["trainer"].lr_scheduler_configs]
    assert sched_a == [c.scheduler.state_dict() for c in resumed["trainer"].lr_scheduler_configs]
    assert full["clip"] == resumed["clip"]
    rest = [(s, n, v) for s, n, v in full["logged"] if s >= from_step]
    assert [(s, n) for s, n, _ in resumed["logged"]] == [(s, n) for s, n, _ in rest]
    assert all(torch.equal(v, w) for (_, _, v), (_, _, w) in zip(rest, resumed["logged"]))


def check_resumes(make_module, make_data, tmp_path):
    """The uninterrupted run against: resumes from a mid-epoch and an end-of-epoch step checkpoint (one of them
    with a worker process), and a run stopped by ``max_steps`` mid-epoch (its ``last.ckpt``), then resumed."""
    full = fit(make_module(), make_data(0), tmp_path / "full", STEPS, every_step=True)
    assert full["trainer"].train_dataloader.state_dict() == {"epoch": 1, "batches": 2, "num_batches": 4}
    for step, workers in ((2, 0), (4, 1)):
        resumed = fit(make_module(), make_data(workers), tmp_path / f"from{step}", STEPS,
                      ckpt_path=str(tmp_path / "full" / f"step={step}.ckpt"))
        assert_same_end(full, resumed, step)
    fit(make_module(), make_data(0), tmp_path / "stopped", 3)
    resumed = fit(make_module(), make_data(0), tmp_path / "continued", STEPS,
                  ckpt_path=str(tmp_path / "stopped" / "last.ckpt"))
    assert_same_end(full, resumed, 3)


# ---------------------------------------------------------------------------------------------- denoiser
@pytest.fixture(scope="module")
def text_encoder_folder(tmp_path_factory):
    from test_pipeline import make_text_encoder_folder

    return make_text_encoder_folder(tmp_path_factory.mktemp("text_encoder"))


def test_denoiser_resume_is_exact(tmp_path, text_encoder_folder):
    config = dict(num_attention_heads=2, attention_head_dim=12, cross_attention_dim=24, in_channels=8,
                  out_channels=8, num_layers=2, caption_channels=16, sparse1d=False)

    def make_module():
        return DenoiserTraining(model_config=config, vae=os.path.join(DATA, "wfvae_tiny"),
                                text_encoder=text_encoder_folder, max_text_length=8, lr=1e-3, ema_decay=0.5,
                                warmup_steps=2, seed=3)

    def make_data(workers):  # 4 clips (two buckets) in batches of 1; random windows, captions and caption dropout
        return OpenSoraDataModule(data=[TINY_DATA, TINY_DATA], num_frames=5, fps=8, max_tokens=8, min_tokens=4,
                                  batch_size=1, caption_dropout=0.5, num_workers=workers, seed=1)

    check_resumes(make_module, make_data, tmp_path)


# ---------------------------------------------------------------------------------------------- WF-VAE
@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    g = torch.Generator().manual_seed(0)
    for i, frames in enumerate((12, 9)):
        with VideoWriter(str(root / f"v{i}.mp4"), fps=10, lossless=True) as writer:
            writer.write(torch.rand(3, frames, 20, 24, generator=g) * 2 - 1)
    for i in range(2):
        write_image(str(root / f"i{i}.png"), torch.rand(3, 20, 22, generator=g) * 2 - 1)
    return str(root)


def test_wfvae_resume_is_exact(tmp_path, clips):
    tiny = dict(base_channels=8, latent_dim=4, encoder_energy_flow_hidden_size=8, decoder_energy_flow_hidden_size=8,
                norm_type="layernorm", t_interpolation="trilinear")

    def make_module():  # GAN from step 2 (discriminator with dropout), EMA, clipping, posterior samples
        torch.manual_seed(0)
        return WFVAETraining(vae=WFVAEConfig(**tiny), lr=2e-3, perceptual="msssim", perceptual_weight=0.2,
                             disc_start=2, disc_channels=8, disc_layers=2, ema_decay=0.5, grad_clip=1.0, seed=5)

    def make_data(workers):  # 8 samples a epoch (4 video, 4 image) in batches of 2; every augmentation on
        return VideoDataModule(data=[clips], num_frames=5, sample_rate=2, dynamic_sample=True, resolution=20,
                               min_resolution=16, crop_size=16, batch_size=2, num_workers=workers,
                               samples_per_epoch=8, seed=2, cut_prob=0.5)

    check_resumes(make_module, make_data, tmp_path)


# ---------------------------------------------------------------------------------------------- controller
def test_structure_controller_resume_is_exact(tmp_path):
    from opensora.synthetic.control_data import SyntheticControlData
    from opensora.training.controller import StructureControllerTraining

    def make_module():  # random timesteps, noise and partial frame masks
        torch.manual_seed(0)  # the fresh controller's initial weights
        return StructureControllerTraining(
            base_config=dict(num_attention_heads=2, attention_head_dim=12, in_channels=8, out_channels=8,
                             num_layers=2, cross_attention_dim=24, caption_channels=32, sparse1d=False),
            controller=dict(num_layers=1, latent_channels=8, downsampler_channels=[8, 8, 8, 8]), lr=1e-2,
            partial_control_prob=0.5, warmup_steps=2, seed=1)

    def make_data(workers):  # 8 clips in batches of 2, shuffled per epoch
        return SyntheticControlData(samples_per_epoch=8, val_samples=0, num_frames=5, height=16, width=16,
                                    batch_size=2, num_workers=workers, seed=3)

    check_resumes(make_module, make_data, tmp_path)


# ---------------------------------------------------------------------------------------------- the parts
def test_loader_position_and_per_sample_seeds():
    from wfvae.training.data import KindBatchSampler

    class Echo(torch.utils.data.Dataset):  # an item is what the sampler gives: (index, seed)
        def __len__(self):
            return 6

        def __getitem__(self, key):
            return key

    def loader():
        sampler = ResumableBatchSampler(KindBatchSampler(["video"] * 6, 2, seed=4), seed=4)
        return ResumableLoader(Echo(), sampler, collate_fn=lambda items: items)

    first = loader()
    epoch0, epoch1 = list(first), list(first)  # one epoch per pass; seeds from (seed, epoch, index)
    assert sorted(i for b in epoch0 for i, _ in b) == list(range(6)) and len(epoch0) == 3
    assert [s for b in epoch0 for i, s in b] == [derive_seed(4, 0, i) for b in epoch0 for i, _ in b]
    assert [s for b in epoch1 for i, s in b] == [derive_seed(4, 1, i) for b in epoch1 for i, _ in b]
    assert first.state_dict() == {"epoch": 2, "batches": 0, "num_batches": 3}
    part = loader()  # a pass stopped after one batch: the state names its second batch, a new pass goes on there
    assert next(iter(part)) == epoch0[0]
    assert part.state_dict() == {"epoch": 0, "batches": 1, "num_batches": 3}
    assert list(part) == epoch0[1:] and list(part) == epoch1
    resumed = loader()  # a fresh loader given that state does the same
    resumed.load_state_dict({"epoch": 0, "batches": 1, "num_batches": 3})
    assert len(resumed) == 3 and list(resumed) == epoch0[1:] and list(resumed) == epoch1
    with pytest.warns(UserWarning, match="training data changed"):
        loader().load_state_dict({"epoch": 0, "batches": 1, "num_batches": 5})
