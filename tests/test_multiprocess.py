"""Every real 2-process run of the test suite (gloo, CPU), launched as users launch them; 2 launches in all.

Training, both trainers: the first runs with ``--trainer.devices 2 --trainer.strategy ddp`` (Lightning starts the
second process), their resumes under ``torchrun --nproc_per_node 2``. One combined run per trainer checks:

* each rank's batch is one shape / one bucket, the ranks' batches of a step are disjoint, and an epoch uses every
  sample once across the ranks; (denoiser) the ranks' diffusion times lie in their own strata of the global batch;
* the weights and the EMA copy are identical on both ranks after every step, and the checkpoints (written by rank
  0) hold exactly those weights;
* (denoiser) ``AdaptiveGradClip(per_rank=True)`` zeroes the rank whose gradient is NaN: the gradient applied on both
  ranks is the normal rank's own, bit for bit, and nothing becomes NaN;
* a run resumed under DDP from a mid-epoch checkpoint continues exactly (same batches, same weights);
* (denoiser) FSDP2 through ``ModelParallelStrategy`` runs the steps of the same run under DDP (losses, weights, EMA,
  clipping and AdamW state), resumes exactly from its sharded folder checkpoint, and ``export`` reads its
  checkpoints.

Sampling and the codec under ``torchrun --nproc_per_node 2``: sequence parallelism equals one process for the tiny
denoiser with dense and Skiparse blocks on a token count that 2 does not divide (with latent and text masks and
controller residuals) and for a whole sampling through ``python -m opensora.cli``; ``python -m wfvae.cli encode``
splits a list of inputs over the processes; ``python -m wfvae.cli decode`` of one latents file splits its time.

Process start-up (torch, Lightning, diffusers imports) costs more than these checks, so they share two launches
(module-scoped fixture :func:`launched`): tests/mp_driver.py runs several jobs in the same processes, first both
trainers' first runs (Lightning's launcher), then under ``torchrun`` the sampling and codec checks and both resumes.
Per-rank training records come from the test callback :class:`mp_probe.Probe`.
"""
import json
import os
import shutil

import pytest
import torch
import yaml

from mp_probe import ROOT, launch, read, state_digests

DRIVER = os.path.join(ROOT, "tests", "mp_driver.py")  # several jobs per launch
CLIP = os.path.join(ROOT, "assets", "bigbuckbunny.mp4")
VAE = os.path.join(ROOT, "tests", "data", "wfvae_tiny")
# the tiny model has 2 heads; 5 frames at 48x48 are 2 x 3 x 3 = 18 tokens, Skiparse in the middle block
SAMPLE = ["--prompt", "a cat", "--frames", "5", "--height", "48", "--width", "48", "--steps", "2", "--max-length", "12",
          "--quiet", "--device", "cpu", "--fps", "8", "--seed", "3"]
ENCODE = ["--model", VAE, "--frames", "5", "--size", "32x32", "--quiet"]
INPUTS = ("a.mp4", "b.mp4", "c.mp4")
# 68 latent frames: rank 0 decodes latents 0..50, rank 1 owns 50..67 after a warm-up from latent 18 (halo 32);
# --lossless: the frames are compared
DECODE = ["--model", VAE, "--device", "cpu", "--quiet", "--lossless"]
DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
STEPS, CKPT_STEP = 4, 2


def write_config(src, folder, tag, poison_step=None, checkpoints=True, probe=True, **edit):
    """The tiny config ``src`` with its run folders in ``folder``, a checkpoint every 2 steps (or none), the probe
    callback (records of run ``tag``; ``probe=False``: only each step's loss, ``mp_driver.StepLosses``) and the
    ``edit`` values (``section.key`` -> value)."""
    with open(os.path.join(ROOT, "configs", src)) as fh:
        cfg = yaml.safe_load(fh)
    trainer = cfg["trainer"]
    trainer.update(default_root_dir=str(folder), max_steps=STEPS, enable_progress_bar=False,
                   enable_model_summary=False, logger=False)
    callbacks = [c for c in trainer["callbacks"] if not c["class_path"].endswith("ModelCheckpoint")]
    if checkpoints:
        callbacks.append({"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                          "init_args": {"dirpath": str(folder / "ckpt"), "filename": "{step}", "save_top_k": -1,
                                        "every_n_train_steps": CKPT_STEP}})
    trainer["enable_checkpointing"] = checkpoints
    if probe:
        callbacks.append({"class_path": "mp_probe.Probe",
                          "init_args": {"out": str(folder / "probe"), "tag": tag, "poison_step": poison_step}})
    else:
        callbacks.append({"class_path": "mp_driver.StepLosses",
                          "init_args": {"out": str(folder / "losses"), "tag": tag}})
    trainer["callbacks"] = callbacks
    for dotted, value in edit.items():
        section, key = dotted.split(".")
        cfg[section]["init_args"][key] = value
    path = folder / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def check_ranks(records, batch_size, steps_per_epoch, samples):
    """One shape per rank batch, disjoint ranks per step, every sample once per epoch, identical weights."""
    r0, r1 = records
    assert sorted(r0) == sorted(r1) == list(range(1, STEPS + 1))
    for step in r0:
        a, b = r0[step], r1[step]
        for rec in (a, b):
            assert len({json.dumps(k) for k in rec["buckets"]}) == 1, rec  # one bucket per batch
            assert all(shape[0] == len(rec["indices"]) <= batch_size for shape in rec["shapes"].values())
        assert not set(a["indices"]) & set(b["indices"]), (step, a["indices"], b["indices"])
        assert a["weights"] == b["weights"], step  # model, EMA (and frozen parts) identical on both ranks
    for first in range(1, STEPS + 1, steps_per_epoch):
        epoch = [i for s in range(first, min(first + steps_per_epoch, STEPS + 1)) for r in records
                 for i in r[s]["indices"]]
        assert len(epoch) == len(set(epoch)), epoch  # no sample twice in an epoch
        if first + steps_per_epoch <= STEPS + 1:
            assert sorted(epoch) == list(range(samples)), epoch


def check_checkpoints(folder, records):
    for step in (CKPT_STEP, STEPS):
        name = f"step={step}.ckpt"
        ckpt = torch.load(folder / "ckpt" / name, map_location="cpu", weights_only=False)
        assert ckpt["global_step"] == step
        assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values() if t.is_floating_point())
        saved = state_digests(ckpt["state_dict"])  # the denoiser leaves its frozen VAE out of checkpoints
        assert "ema" in saved and saved.keys() & {"vae", "model"}
        for rank in (0, 1):
            assert saved == {k: v for k, v in records[rank][step]["weights"].items() if k in saved}
        clip = [key for key in ckpt["callbacks"] if key.startswith("AdaptiveGradClip")]
        assert len(clip) == ("clip" in records[0][step])
        for key, state in ckpt["callbacks"].items():
            if key.startswith("AdaptiveGradClip"):
                assert state == records[0][step]["clip"] == records[1][step]["clip"]


def check_resume(first, resumed):
    for rank in (0, 1):
        assert sorted(resumed[rank]) == list(range(CKPT_STEP + 1, STEPS + 1))
        for step in resumed[rank]:
            a, b = first[rank][step], resumed[rank][step]
            assert (a["indices"], a["weights"], a["applied"]) == (b["indices"], b["weights"], b["applied"]), step


def vae_configs(folder):
    """The VAE's first run and its resume (from the step-2 checkpoint): configs and ``tools/train.py`` arguments.
    The demo's model at a quarter of its width (what is checked does not depend on the width; the full one spends
    seconds per step and writes 150 MB checkpoints)."""
    folder.mkdir()
    with open(os.path.join(ROOT, "configs", "wfvae", "tiny.yaml")) as fh:
        vae = yaml.safe_load(fh)["model"]["init_args"]["vae"]
    vae.update(base_channels=8, encoder_energy_flow_hidden_size=8, decoder_energy_flow_hidden_size=8)
    edit = {"data.data": [CLIP], "data.val_data": None, "data.samples_per_epoch": 8, "model.vae": vae}
    first = write_config("wfvae/tiny.yaml", folder, "first", **edit)
    resumed = write_config("wfvae/tiny.yaml", folder, "resumed", checkpoints=False, **edit)
    return (["fit", "--config", first, *DDP],
            ["fit", "--config", resumed, *DDP, "--ckpt_path", folder / "ckpt" / f"step={CKPT_STEP}.ckpt"])


def test_vae_training_on_two_processes(launched):
    for job in ("vae_first", "vae_resumed"):
        launched.job(job)  # both exited 0 on both ranks
    folder = launched.root / "vae"
    records = [read(folder / "probe", "first", r) for r in (0, 1)]
    check_ranks(records, batch_size=1, steps_per_epoch=4, samples=8)
    assert len({r[s]["weights"]["vae"] for r in records for s in r}) == STEPS  # the weights did change each step
    check_checkpoints(folder, records)
    check_resume(records, [read(folder / "probe", "resumed", r) for r in (0, 1)])


def tiny_annotations(folder):
    """8 entries of the bundled clip in two buckets (5 in 16:9, 3 square crops): with batch size 2 on 2 ranks, an
    epoch is 3 steps (the bucket sampler splits a batch so that the batch count is even)."""
    wide = {"path": CLIP, "resolution": {"height": 270, "width": 480}, "num_frames": 75, "fps": 25.0}
    entries = [dict(wide, cap=f"wide clip {i}", cut=[4 * i, 40 + 4 * i]) for i in range(5)]
    entries += [dict(wide, cap=f"square clip {i}", crop=[0, 270, 60 * i, 60 * i + 270]) for i in range(3)]
    path = folder / "data.json"
    path.write_text(json.dumps(entries))
    return path


@pytest.mark.parametrize("module", ["opensora", "wfvae"])
def test_data_modules_shard_by_the_trainers_rank(tmp_path, module):
    """In one process: the training loader of each data module takes its rank's share from the trainer it is
    attached to (the 2-process runs below check the same end to end)."""
    from types import SimpleNamespace

    if module == "opensora":
        from opensora.data.datasets import OpenSoraDataModule

        dm = OpenSoraDataModule(data=str(tiny_annotations(tmp_path)), num_frames=9, fps=12, max_tokens=16,
                                min_tokens=8, batch_size=1, num_workers=0)
    else:
        from wfvae.training.data import VideoDataModule

        dm = VideoDataModule(data=[CLIP], num_frames=5, resolution=32, batch_size=1, num_workers=0,
                             samples_per_epoch=8)
    dm.setup()
    shares = []
    for rank in (0, 1):
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        sampler = dm.train_dataloader().batch_sampler
        shares.append([i for batch in sampler.inner.epoch_batches(0) for i in batch])
    assert len(shares[0]) == len(shares[1]) == 4 and sorted(shares[0] + shares[1]) == list(range(8))


def denoiser_configs(folder):
    """The denoiser's first run (rank 1's gradient NaN at step 2, per-rank clipping) and its resume."""
    folder.mkdir()
    data = tiny_annotations(folder)
    edit = {"data.data": str(data), "data.val_data": None, "data.batch_size": 2, "data.caption_dropout": 0.0,
            "model.vae": VAE, "model.export_dir": None}
    first = write_config("opensora/tiny.yaml", folder, "first", poison_step=2, **edit)
    cfg = yaml.safe_load(first.read_text())
    for cb in cfg["trainer"]["callbacks"]:
        if cb["class_path"].endswith("AdaptiveGradClip"):
            cb["init_args"]["per_rank"] = True  # the report's DDP rule (the callback registers the local hook)
    first.write_text(yaml.safe_dump(cfg))

    cfg["trainer"]["callbacks"][-1]["init_args"].update(tag="resumed", poison_step=None)
    cfg["trainer"]["callbacks"] = [c for c in cfg["trainer"]["callbacks"] if "ModelCheckpoint" not in c["class_path"]]
    cfg["trainer"]["enable_checkpointing"] = False
    resumed = folder / "resumed.yaml"
    resumed.write_text(yaml.safe_dump(cfg))
    return (["fit", "--config", first, *DDP],
            ["fit", "--config", resumed, *DDP, "--ckpt_path", folder / "ckpt" / f"step={CKPT_STEP}.ckpt"])


def long_latents(path):
    """A latents file of the test VAE: 68 random latent frames at 1x2 for a 267-frame 8x14 video (2 frames trimmed)."""
    from safetensors.torch import save_file

    from wfvae import WFVAE
    from wfvae.io.latents_file import latents_metadata

    vae = WFVAE.from_pretrained(VAE)
    z = torch.randn(1, vae.config.latent_dim, 68, 1, 2, generator=torch.Generator().manual_seed(0))
    save_file({"latents": z}, str(path), metadata=latents_metadata(vae, 267, 8, 14, 8.0))


FSDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.strategy.class_path", "lightning.pytorch.strategies.ModelParallelStrategy"]


def fsdp_configs(folder):
    """The denoiser's run under DDP (the reference) and under FSDP2 (``ModelParallelStrategy``, sharded folder
    checkpoints), the same config otherwise (the global-norm clipping rule); and the FSDP run resumed from its
    step-2 folder, writing a one-file checkpoint at step 4."""
    for name in ("", "ddp", "fsdp", "resumed"):
        (folder / name).mkdir()
    edit = {"data.data": str(tiny_annotations(folder)), "data.val_data": None, "data.batch_size": 2,
            "data.caption_dropout": 0.0, "model.vae": VAE, "model.export_dir": None}
    ddp = write_config("opensora/tiny.yaml", folder / "ddp", "ddp", probe=False, **edit)
    fsdp = write_config("opensora/tiny.yaml", folder / "fsdp", "fsdp", probe=False, **edit)
    resumed = write_config("opensora/tiny.yaml", folder / "resumed", "resumed", probe=False, **edit)
    single_file = ["--trainer.strategy.init_args.save_distributed_checkpoint", "false"]
    return (["fit", "--config", ddp, *DDP], ["fit", "--config", fsdp, *FSDP],
            ["fit", "--config", resumed, *FSDP, *single_file,
             "--ckpt_path", folder / "fsdp" / "ckpt" / f"step={CKPT_STEP}.ckpt"])


class Launched:
    """The folder of the two launches and each job's per-rank records (``<job>-rank<r>.json``, tests/mp_driver.py)."""

    def __init__(self, root, failures):
        self.root, self.failures = root, failures

    def job(self, name):
        """``[rank 0 record, rank 1 record]`` of job ``name``, each asserted to have exited 0."""
        records = []
        for rank in (0, 1):
            path = self.root / f"{name}-rank{rank}.json"
            if not path.is_file():
                pytest.fail(f"job {name} did not run on rank {rank}:\n" + "\n".join(self.failures))
            records.append(json.loads(path.read_text()))
            assert records[-1]["code"] == 0, (name, rank, records[-1].get("stderr", "")[-4000:], self.failures)
        return records


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Launch 1 (``python mp_driver.py``, Lightning starts the second process): both trainers' first runs, then the
    denoiser's DDP reference and FSDP runs. Launch 2 (``torchrun``): the sequence-parallel model cases, ``python -m
    opensora.cli`` sampling, ``python -m wfvae.cli encode`` of 3 inputs and ``decode`` of one long latents file
    (split in time), then both trainers' resumes and the FSDP resume. A failed launch is reported by the tests whose
    jobs did not run (jobs that ran keep their records)."""
    from test_pipeline import make_pipeline_folder

    root = tmp_path_factory.mktemp("mp")
    vae, denoiser = vae_configs(root / "vae"), denoiser_configs(root / "denoiser")
    models = make_pipeline_folder(root / "models")
    for folder in ("in", "two"):
        (root / folder).mkdir()
    for name in INPUTS:
        shutil.copy(CLIP, root / "in" / name)
    long_latents(root / "long.safetensors")
    fsdp = fsdp_configs(root / "fsdp")
    first = [{"name": "vae_first", "train": vae[0]}, {"name": "denoiser_first", "train": denoiser[0]},
             {"name": "fsdp_ddp", "train": fsdp[0]}, {"name": "fsdp_first", "train": fsdp[1]}]
    second = [{"name": "sequence_parallel", "sequence_parallel": True},
              {"name": "sample", "module": "opensora.cli",
               "argv": [*SAMPLE, "--model", models, "--output", root / "two" / "cat.mp4",
                        "--save-latents", root / "two" / "z.safetensors"]},
              {"name": "encode", "module": "wfvae.cli",
               "argv": ["encode", *[root / "in" / n for n in INPUTS], root / "lat", *ENCODE, "--device", "cpu"]},
              {"name": "decode_split", "module": "wfvae.cli",
               "argv": ["decode", root / "long.safetensors", root / "split.mp4", *DECODE]},
              {"name": "vae_resumed", "train": vae[1]}, {"name": "denoiser_resumed", "train": denoiser[1]},
              {"name": "fsdp_resumed", "train": fsdp[2]}]
    failures = []
    for name, jobs, torchrun in (("first", first, 0), ("second", second, 2)):
        for job in jobs:
            for key in ("train", "argv"):
                if key in job:
                    job[key] = [str(a) for a in job[key]]
        (root / f"{name}.json").write_text(json.dumps(jobs))
        try:
            launch([DRIVER, root / f"{name}.json", root], cwd=root, torchrun=torchrun)
        except pytest.fail.Exception as exc:
            failures.append(str(exc))
    return Launched(root, failures)


def test_denoiser_training_on_two_processes(launched):
    for job in ("denoiser_first", "denoiser_resumed"):
        launched.job(job)
    folder = launched.root / "denoiser"
    records = [read(folder / "probe", "first", r) for r in (0, 1)]
    check_ranks(records, batch_size=2, steps_per_epoch=3, samples=8)
    assert len({r[s]["weights"]["model"] for r in records for s in r}) == STEPS
    assert len({r[s]["weights"]["ema"] for r in records for s in r}) == STEPS

    for step in records[0]:  # stratified times: rank r's sample i in stratum r * B + i of 2B (B: its batch size),
        for rank, r in enumerate(records):  # so each rank covers its half of [0, 1000) whatever its batch size
            b = len(r[step]["indices"])
            assert len(r[step]["times"]) == b
            for i, t in enumerate(r[step]["times"]):
                assert (rank * b + i) * 1000 / (2 * b) <= t < (rank * b + i + 1) * 1000 / (2 * b), (step, rank)
    # step 2: rank 1's gradient is NaN -> zeroed; rank 0's is doubled, then the two are averaged: rank 0's own
    poisoned = [records[0][2], records[1][2]]
    assert torch.isnan(torch.tensor(poisoned[1]["local"]["norm"]))
    assert poisoned[0]["applied"]["digest"] == poisoned[1]["applied"]["digest"] == poisoned[0]["local"]["digest"]
    for step in (1, 3):  # normal steps: the local gradients differ (the hook left them local), the applied agree
        assert records[0][step]["local"]["digest"] != records[1][step]["local"]["digest"]
        assert records[0][step]["applied"]["digest"] == records[1][step]["applied"]["digest"]
    assert records[0][STEPS]["clip"]["count"] == STEPS and records[0][STEPS]["clip"]["skipped"] == 0
    check_checkpoints(folder, records)
    check_resume(records, [read(folder / "probe", "resumed", r) for r in (0, 1)])


def test_sequence_parallel_equals_one_process(launched):
    for rank, record in enumerate(launched.job("sequence_parallel")):
        result = record["models"]
        assert sorted(result) == ["dense", "skiparse"]
        for name, case in result.items():
            assert case["scale"] > 0.1, (rank, name)          # a real output, not zeros
            assert case["diff"] <= 1e-5, (rank, name, case)
            assert case["removed"], (rank, name)              # remove() restores the single-process model
            assert case["tokens"] == [14, 14, 14], (rank, name)  # ceil(27 / 2) tokens per rank in every block


def test_torchrun_sampling_cli_equals_one_process(launched, tmp_path):
    """``torchrun --nproc_per_node 2 -m opensora.cli ...`` samples with sequence parallelism and rank 0 alone
    writes: the same latents as one process."""
    from opensora.cli.sample import main
    from opensora.cli.sample_io import load_latents

    root = launched.root
    assert "sequence parallel: the video tokens split over 2 processes" in launched.job("sample")[0]["stderr"]
    assert sorted(os.listdir(root / "two")) == ["cat.mp4", "z.safetensors"]
    assert main([*SAMPLE, "--model", str(root / "models"), "--output", str(tmp_path / "cat.mp4"), "--save-latents",
                 str(tmp_path / "z.safetensors")]) == 0
    one, _ = load_latents(str(tmp_path / "z.safetensors"))
    two, _ = load_latents(str(root / "two" / "z.safetensors"))
    assert one.shape == two.shape == (1, 4, 2, 6, 6) and one.abs().max() > 0.1
    assert (one - two).abs().max() <= 1e-5


def test_torchrun_encodes_a_list_across_two_processes(launched, tmp_path):
    """(formerly in tests/test_cli.py) ``torchrun --nproc_per_node 2 -m wfvae.cli encode a b c OUT``: rank r takes
    inputs r, r + 2, ...; together they write every latents file, each the same as one process writes."""
    from wfvae import WFVAE
    from wfvae.cli import main, read_latents

    root = launched.root
    launched.job("encode")
    assert sorted(os.listdir(root / "lat")) == ["a.safetensors", "b.safetensors", "c.safetensors"]
    vae = WFVAE.from_pretrained(VAE)
    single = tmp_path / "c.safetensors"
    assert main(["encode", str(root / "in" / "c.mp4"), str(single), *ENCODE]) == 0
    assert torch.equal(read_latents(str(root / "lat" / "c.safetensors"), vae)[0], read_latents(str(single), vae)[0])


def test_torchrun_decodes_one_video_split_in_time(launched, tmp_path):
    """``torchrun --nproc_per_node 2 -m wfvae.cli decode long.safetensors split.mp4``: each rank decodes half of the
    video's time (rank 1 after a warm-up halo), rank 0 writes: the frames one process writes."""
    from wfvae.cli import main
    from wfvae.io.video import read_video

    root = launched.root
    assert "time split: 2 processes, warm-up halo 32 latent frames" in launched.job("decode_split")[0]["stderr"]
    single = tmp_path / "one.mp4"
    assert main(["decode", str(root / "long.safetensors"), str(single), *DECODE]) == 0
    one, two = read_video(str(single)), read_video(str(root / "split.mp4"))
    assert one.shape == two.shape == (3, 267, 8, 14) and one.std() > 0.01
    assert torch.equal(one, two)


def read_losses(folder, tag):
    """``[{step: record}]`` per rank of a run with ``mp_driver.StepLosses``."""
    return [read(folder / "losses", tag, rank) for rank in (0, 1)]


def test_fsdp_training_equals_ddp(launched, tmp_path):
    """FSDP2 (``ModelParallelStrategy``, gloo) runs DDP's steps: the same losses on each rank, the same weights, EMA,
    clipping statistics and AdamW state at every checkpoint (sharded folders); resumed from its step-2 folder it
    continues exactly (writing a one-file checkpoint); ``export`` of either gives the EMA denoiser in the release
    layout."""
    from opensora.models import OpenSoraT2V
    from opensora.training.offline import main as training_cli
    from opensora.training.sharding import read_checkpoint

    for job in ("fsdp_ddp", "fsdp_first", "fsdp_resumed"):
        launched.job(job)
    folder = launched.root / "fsdp"
    ddp, fsdp, resumed = (read_losses(folder / tag, tag) for tag in ("ddp", "fsdp", "resumed"))
    total = ddp[0][1]["numel"]
    for rank in (0, 1):
        assert sorted(ddp[rank]) == sorted(fsdp[rank]) == list(range(1, STEPS + 1))
        assert sorted(resumed[rank]) == list(range(CKPT_STEP + 1, STEPS + 1))
        for step in ddp[rank]:
            a, b = ddp[rank][step], fsdp[rank][step]
            assert abs(a["loss"] - b["loss"]) <= 1e-5 * max(1.0, abs(a["loss"])), (rank, step, a, b)
            assert not a["sharded"] and a["numel"] == total
            assert b["sharded"] and b["numel"] < total  # this rank holds its shards only
            if step in resumed[rank]:
                assert resumed[rank][step]["loss"] == b["loss"], (rank, step)
    assert ddp[0][1]["loss"] != ddp[1][1]["loss"]  # the ranks trained on different samples
    assert total <= fsdp[0][1]["numel"] + fsdp[1][1]["numel"] <= 1.05 * total  # the shards cover it (+ padding)

    for step in (CKPT_STEP, STEPS):
        ref, ours = (read_checkpoint(str(folder / tag / "ckpt" / f"step={step}.ckpt")) for tag in ("ddp", "fsdp"))
        assert (folder / "fsdp" / "ckpt" / f"step={step}.ckpt").is_dir()  # one shard file per rank
        assert len(list((folder / "fsdp" / "ckpt" / f"step={step}.ckpt").glob("*.distcp"))) == 2
        assert ours["global_step"] == ref["global_step"] == step
        assert any(k.startswith("ema.module.") for k in ours["state_dict"])
        trained = sorted(k for k in ours["state_dict"] if not k.startswith("vae."))  # folders keep the frozen VAE
        assert trained == sorted(ref["state_dict"])
        for key, value in ref["state_dict"].items():
            assert torch.allclose(ours["state_dict"][key].float(), value.float(), rtol=0, atol=1e-5), (step, key)
        clip = ours["callbacks"]["AdaptiveGradClip"], ref["callbacks"]["AdaptiveGradClip"]
        assert clip[0]["count"] == clip[1]["count"] == step and abs(clip[0]["mean"] - clip[1]["mean"]) <= 1e-6
        (opt,), (opt_ref,) = ours["optimizer_states"], ref["optimizer_states"]
        moments = [[o["state"][p] for g in o["param_groups"] for p in g["params"]] for o in (opt, opt_ref)]
        assert len(moments[0]) == len(moments[1]) == len(opt_ref["state"])  # keyed by name / by index: same order
        for mine, theirs in zip(*moments):
            for name in ("exp_avg", "exp_avg_sq"):
                assert torch.allclose(mine[name], theirs[name], rtol=1e-5, atol=1e-8), (step, name)
    shards = folder / "fsdp" / "ckpt" / f"step={STEPS}.ckpt"
    first = read_checkpoint(str(shards))
    single = folder / "resumed" / "ckpt" / f"step={STEPS}.ckpt"
    assert single.is_file()
    again = read_checkpoint(str(single))
    assert again["global_step"] == STEPS and not any(k.startswith("vae.") for k in again["state_dict"])
    for key, value in again["state_dict"].items():
        assert torch.equal(first["state_dict"][key], value), key  # the resume continued exactly
    weights = {}
    for name, source in (("folder", shards), ("file", single)):
        assert training_cli(["export", str(source), str(tmp_path / name)]) == 0
        weights[name] = OpenSoraT2V.from_pretrained(str(tmp_path / name)).state_dict()
    ema = {k[len("ema.module."):]: v for k, v in first["state_dict"].items() if k.startswith("ema.module.")}
    assert sorted(weights["file"]) == sorted(ema)
    for key, value in ema.items():
        assert torch.equal(weights["file"][key], value) and torch.equal(weights["folder"][key], value), key
