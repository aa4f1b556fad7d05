"""Open-Sora Plan v1.3 text-to-video denoiser, state-dict compatible with the published release."""
from .config import OpenSoraT2VConfig
from .skiparse import skiparse_attention
from .transformer import OpenSoraT2V

__all__ = ["OpenSoraT2V", "OpenSoraT2VConfig", "skiparse_attention"]
