"""CUDA checks of the shipped tiny WF-VAE (marked ``gpu``; skipped where no CUDA device is present, as in CI).

The float32 CPU result is the reference. On the GPU, float32 (cuDNN's default TF32 convolutions) must agree with
it closely, and bfloat16 (the ``wfvae`` command's default on CUDA) must reconstruct the clip about as well, also
block-wise with the causal cache. Run with ``python -m pytest -m gpu tests/test_gpu.py``.
"""
import os

import pytest
import torch

from wfvae import WFVAE
from wfvae.evaluation.metrics import video_psnr
from wfvae.io.video import read_video

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ROOT = os.path.join(os.path.dirname(__file__), "..")
MODEL = os.path.join(ROOT, "assets", "models", "wfvae-tiny")
CLIP = os.path.join(ROOT, "assets", "bigbuckbunny.mp4")


@pytest.fixture(scope="module")
def clip():
    return read_video(CLIP, num_frames=17, size=(128, 128)).unsqueeze(0)  # (1, 3, 17, 128, 128)


def reconstruct(clip, device, dtype, latent_chunk=None):
    vae = WFVAE.from_pretrained(MODEL, dtype=dtype, device=device)
    x = clip.to(device, dtype)
    with torch.no_grad():
        z = vae.encode(x, latent_chunk=latent_chunk).latent_dist.mode()
        return vae.decode(z, latent_chunk=latent_chunk).sample.float().cpu(), z.float().cpu()


@pytest.fixture(scope="module")
def reference(clip):
    return reconstruct(clip, "cpu", torch.float32)


def test_cuda_float32_matches_cpu(clip, reference):
    rec, z = reconstruct(clip, "cuda", torch.float32)
    ref_rec, ref_z = reference
    assert ((z - ref_z).norm() / ref_z.norm()).item() < 1e-2
    assert video_psnr(ref_rec, rec, quantize=False).item() > 45


@pytest.mark.parametrize("latent_chunk", [None, 2])
def test_cuda_bfloat16_close_to_float32(clip, reference, latent_chunk):
    rec, z = reconstruct(clip, "cuda", torch.bfloat16, latent_chunk)
    ref_rec, ref_z = reference
    assert ((z - ref_z).norm() / ref_z.norm()).item() < 5e-2
    quality_fp32 = video_psnr(clip, ref_rec).item()
    quality_bf16 = video_psnr(clip, rec).item()
    print(f"latent_chunk={latent_chunk}: PSNR vs input fp32 {quality_fp32:.2f} dB, bf16 {quality_bf16:.2f} dB, "
          f"bf16 vs fp32 {video_psnr(ref_rec, rec, quantize=False).item():.2f} dB")
    assert quality_bf16 > quality_fp32 - 0.5
    assert video_psnr(ref_rec, rec, quantize=False).item() > 40
