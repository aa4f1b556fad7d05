"""Videos longer than the model's window: chained continuation, decoded as one causal stream.

The first window comes from a text-to-video pipeline (or, without one, from the image-condition model with no
condition); every later window is sampled by an :class:`~opensora.pipelines.OpenSoraImageToVideoPipeline` whose
``continuation`` condition keeps the previous window's last decoded frames (those of its last ``overlap`` latent
frames, from the decode of the whole window). Only the new
latent frames of a window join the video, and the VAE decodes the whole chain with one stream cache
(:meth:`wfvae.WFVAE.decode_stream`), so frames cross a window boundary exactly as they cross a chunk boundary
inside a window: there is no decoding seam, and memory stays bounded by one window whatever the length::

    chain = ContinuationChain(continuation_pipe, first=t2v_pipe, overlap=2)
    for frames in chain.frames("a red ball moving to the right", num_frames=129, seed=0):
        writer.write(frames)                               # (B, 3, t, H, W) in [-1, 1], as they are decoded

Windows are sampled with seeds ``seed + i`` (window ``i``), so a run that was stopped can resume from the windows
it already made (``done=``) and give the same video. With a window of ``W`` latent frames and overlap ``k``, window
0 brings ``1 + 4 (W - 1)`` frames and every later one ``4 (W - k)``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch

from opensora.pipelines.text_to_video import OpenSoraPipeline


def continuation_pipeline(first: OpenSoraPipeline, folder: str, dtype: Optional[torch.dtype] = None):
    """An :class:`~opensora.pipelines.OpenSoraImageToVideoPipeline` of the image-condition model in ``folder`` (its
    ``transformer`` part, or the folder itself) that shares ``first``'s text encoder, VAE, scheduler, settings and
    progress-bar options, on ``first``'s device. ValueError when ``folder`` holds a text-to-video model."""
    from opensora.models import load_denoiser
    from opensora.models.inpaint import is_inpaint
    from opensora.pipelines.conditions import OpenSoraImageToVideoPipeline
    from opensora.pipelines.defaults import part_folder, read_index

    transformer = load_denoiser(part_folder(folder, "transformer", read_index(folder)) or folder, dtype=dtype)
    if not is_inpaint(transformer):
        raise ValueError(f"{folder} is a text-to-video model: an image-condition model (OpenSoraInpaint) is needed")
    pipe = OpenSoraImageToVideoPipeline(first.tokenizer, first.text_encoder, transformer.to(first._execution_device),
                                        first.vae, first.scheduler, sampling=dict(first.config.get("sampling") or {}))
    pipe.set_progress_bar_config(**getattr(first, "_progress_bar_config", {}))
    return pipe


class ContinuationChain:
    """Chains windows of ``pipe`` (an :class:`~opensora.pipelines.OpenSoraImageToVideoPipeline` with an
    image-condition transformer) into one video.

    Args:
        pipe: samples the continuation windows.
        first: samples window 0 from the prompt (a text-to-video pipeline with the same VAE); ``None``: ``pipe``
            with no condition (``t2iv``).
        overlap: latent frames of the previous window kept as the condition of the next (``1 <= overlap < W``);
            they are the last ``1 + 4 (overlap - 1)`` decoded frames of that window.
        noise_strength: std of the noise added to the kept frames before encoding (the release's condition noise).
        window_frames: frames per window (``4n + 1``); default: ``pipe``'s settings.
        first_call: extra arguments of window 0's call, e.g. ``{"image": [clip]}`` to start from an image with
            ``first=None`` (``pipe`` then keeps it as frame 0).
    """

    def __init__(self, pipe: OpenSoraPipeline, first: Optional[OpenSoraPipeline] = None, overlap: int = 2,
                 noise_strength: float = 0.0, window_frames: Optional[int] = None,
                 first_call: Optional[Dict[str, Any]] = None):
        f = pipe.vae.temporal_compression
        window_frames = pipe.settings["num_frames"] if window_frames is None else window_frames
        if not isinstance(window_frames, int) or window_frames < f + 1 or (window_frames - 1) % f:
            raise ValueError(f"window_frames must be {f}n + 1 with n >= 1, got {window_frames}")
        latent_window = 1 + (window_frames - 1) // f
        if not isinstance(overlap, int) or not 1 <= overlap < latent_window:
            raise ValueError(f"overlap must be an integer in [1, {latent_window - 1}] (latent frames of a "
                             f"{window_frames}-frame window), got {overlap!r}")
        if not (isinstance(noise_strength, (int, float)) and math.isfinite(noise_strength) and noise_strength >= 0):
            raise ValueError(f"noise_strength must be a finite number >= 0, got {noise_strength!r}")
        self.pipe, self.first, self.overlap, self.noise_strength = pipe, first, overlap, float(noise_strength)
        self.window_frames, self.latent_window, self.f = window_frames, latent_window, f
        self.first_call = dict(first_call or {})

    # ------------------------------------------------------------------ sizes
    def num_windows(self, num_frames: int) -> int:
        """Windows needed for ``num_frames`` output frames (the last one may be trimmed)."""
        if not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
        extra = max(0, num_frames - self.window_frames)
        return 1 + math.ceil(extra / (self.f * (self.latent_window - self.overlap)))

    def condition_frames(self) -> int:
        """Pixel frames kept from the previous window: ``1 + 4 (overlap - 1)``."""
        return 1 + self.f * (self.overlap - 1)

    # ------------------------------------------------------------------ sampling
    def latents(self, prompt, num_frames: int, seed: int = 0, done: Sequence[torch.Tensor] = (),
                on_window: Optional[Callable[[int, torch.Tensor], None]] = None,
                **call_kwargs: Any) -> Iterator[torch.Tensor]:
        """Diffusion-space latents of each window, (B, C, W, h, w), in order.

        ``done``: windows of an earlier run with the same arguments, yielded as they are (not sampled again).
        ``on_window(i, latents)`` is called for each newly sampled window (e.g. to save it). ``call_kwargs`` go to
        every pipeline call (``height``, ``width``, ``num_inference_steps``, ``guidance_scale``, ...).
        """
        for name in ("num_frames", "latents", "generator", "output_type", "return_dict", "video", "image",
                     "mask_type", "cond_frames", "noise_strength", "num_videos_per_prompt"):
            if name in call_kwargs:
                raise TypeError(f"{name} is set by the chain, not a call argument")
        previous = None
        for i in range(self.num_windows(num_frames)):
            if i < len(done):
                window = done[i]
            else:
                window = self._sample(i, prompt, seed, previous, call_kwargs)
                if on_window is not None:
                    on_window(i, window)
            if window.shape[2] != self.latent_window:
                raise ValueError(f"window {i} has {window.shape[2]} latent frames, {self.latent_window} expected")
            previous = window
            yield window

    def _sample(self, i: int, prompt, seed: int, previous: Optional[torch.Tensor], kwargs) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed + i)
        common = dict(num_frames=self.window_frames, generator=generator, output_type="latent", **kwargs)
        if i == 0:
            pipe = self.first if self.first is not None else self.pipe
            return pipe(prompt, **common, **self.first_call).frames.float().cpu()
        condition = self._condition(previous)
        m, batch = condition.shape[2], condition.shape[0]
        prompts = [prompt] * batch if isinstance(prompt, str) or prompt is None else list(prompt)
        if len(prompts) != batch:
            raise ValueError(f"{len(prompts)} prompts for {batch} videos")
        windows = [self.pipe(prompts[b], video=condition[b], mask_type="continuation", cond_frames=list(range(m)),
                             noise_strength=self.noise_strength,
                             condition_generator=torch.Generator().manual_seed(seed + i),
                             **common).frames.float().cpu()
                   for b in range(batch)]  # one condition video per call
        return torch.cat(windows, dim=0)

    @torch.no_grad()
    def _condition(self, window: torch.Tensor) -> torch.Tensor:
        """The last ``1 + 4 (k - 1)`` frames of ``window`` decoded whole: (B, 3, 1 + 4(k - 1), H, W).

        The whole window is decoded, not only its last ``k`` latent frames: a latent frame decoded on its own is
        read as a video's first frame and comes out as an earlier moment of its four frames, so a continuation
        started from it stepped back at every boundary (about 4 frames of motion)."""
        return self.pipe.decode_latents(window)[:, :, -self.condition_frames():].cpu()

    # ------------------------------------------------------------------ decoding
    def video_latents(self, windows: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The chain as one latent video: window 0 whole, then each window without its ``overlap`` frames;
        VAE-space (unscaled) latents, ready for ``vae.decode_stream``."""
        vae = self.pipe.vae
        for i, window in enumerate(windows):
            part = window if i == 0 else window[:, :, self.overlap:]
            yield vae.unscale_latents(part.float()).to(vae.device, vae.dtype)

    def frames(self, prompt, num_frames: int, seed: int = 0, done: Sequence[torch.Tensor] = (),
               on_window: Optional[Callable[[int, torch.Tensor], None]] = None,
               **call_kwargs: Any) -> Iterator[torch.Tensor]:
        """Decoded frames (B, 3, t, H, W) float32 in [-1, 1] as the windows are made: ``num_frames`` in all."""
        left = num_frames
        windows = self.latents(prompt, num_frames, seed, done, on_window, **call_kwargs)
        for chunk in self.pipe.vae.decode_stream(self.video_latents(windows)):
            if left <= 0:
                continue  # the stream is drained so that the last window's sampling is not left half-done
            chunk = chunk[:, :, :left].float().clamp(-1.0, 1.0)
            left -= chunk.shape[2]
            yield chunk

    def __call__(self, prompt, num_frames: int, seed: int = 0, **call_kwargs: Any) -> torch.Tensor:
        """The whole video (B, 3, num_frames, H, W) in [-1, 1] (in memory: for long videos use :meth:`frames`)."""
        parts: List[torch.Tensor] = list(self.frames(prompt, num_frames, seed, **call_kwargs))
        return torch.cat(parts, dim=2)
