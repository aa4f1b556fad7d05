"""Open-Sora Plan v1.3 components: the text-to-video denoiser (``opensora.models``) and condition masks."""
