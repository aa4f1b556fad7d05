"""Inference helpers around :class:`wfvae.WFVAE`: padding any video to the accepted shapes
(:mod:`~wfvae.inference.padding`), spatial tiling with blended overlaps (:mod:`~wfvae.inference.tiling`),
chunk/tile sizes that fit a memory budget (:mod:`~wfvae.inference.memory`), one video decoded in exact time slices
across processes (:mod:`~wfvae.inference.time_split`) and their frames gathered in order by process 0
(:mod:`~wfvae.inference.frame_relay`). The exact temporal chunking (the causal stream cache) lives with the network
in :mod:`wfvae.models.causal`."""
