"""Inference helpers around :class:`wfvae.WFVAE`: padding any video to the accepted shapes
(:mod:`~wfvae.inference.padding`), spatial tiling with blended overlaps (:mod:`~wfvae.inference.tiling`),
chunk/tile sizes that fit a memory budget (:mod:`~wfvae.inference.memory`), one video decoded in exact time slices
across processes (:mod:`~wfvae.inference.time_split`) and their frames gathered in order by process 0
(:mod:`~wfvae.inference.frame_relay`). The exact temporal chunking (the causal stream cache) lives with the network
in :mod:`wfvae.models.causal`."""

# Latent frames per chunk (4 video frames each) when the caller names none and sets no memory budget: the `wfvae`
# command and the evaluation protocol. 2 keeps the chunked decode's live-tensor peak below the published code's
# chunked decode (WF-VAE-L 129x256x256: 1018 vs 1260 MiB; 4 peaked at 1466) at about the same time per frame
# (benchmarks/NOTES.md). The library's encode/decode default stays the whole clip at once.
DEFAULT_LATENT_CHUNK = 2
