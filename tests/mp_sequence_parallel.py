"""Sequence parallelism on the processes of a launch equals one process (run by tests/mp_driver.py for
tests/test_multiprocess.py): every rank computes the single-process result itself (no hooks), then the
sequence-parallel one, and records the max |difference| per case.

Cases: the tiny denoiser with dense blocks only and with a Skiparse block, on 27 tokens (3 x 3 x 3, not divisible
by 2) with latent and text masks and controller residuals. (The whole sampling is tested through the CLI.)
"""
import torch

from opensora.models.sequence_parallel import enable_sequence_parallel
from test_pipeline import make_transformer  # tests/ is on the path


def model_cases():
    g = torch.Generator().manual_seed(1)
    latent = torch.randn(2, 4, 3, 6, 6, generator=g)              # patch 2: 3 x 3 x 3 = 27 tokens
    text = torch.randn(2, 5, 16, generator=g)
    text_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    mask = torch.ones(2, 3, 6, 6)
    mask[0, :, 4:] = 0                                              # padded latent rows in the first sample
    for name, overrides in (("dense", dict(sparse1d=False)), ("skiparse", {})):
        model = make_transformer(**overrides)
        residuals = [None, 0.1 * torch.randn(2, 27, 24, generator=g), None]
        args = dict(hidden_states=latent, timestep=torch.tensor([10.0, 700.0]), encoder_hidden_states=text,
                    encoder_attention_mask=text_mask, attention_mask=mask, block_residuals=residuals)
        yield name, model, args


def results() -> dict:
    """``{case: {"diff", "scale", "removed", "tokens"}}`` on this rank (the default process group is set up):
    max |parallel - single-process|, max |single-process|, whether ``remove()`` restored the single-process
    outputs, and the tokens each self-attention received."""
    result = {}
    with torch.no_grad():
        for name, model, args in model_cases():
            reference = model(**args).sample
            handle = enable_sequence_parallel(model)
            seen = []  # tokens each self-attention receives (this rank's share)
            probes = [m.attn1.register_forward_pre_hook(lambda mod, a: seen.append(a[0].shape[1]))
                      for m in model.transformer_blocks]
            parallel = model(**args).sample
            handle.remove()
            for probe in probes:
                probe.remove()
            again = model(**args).sample
            result[name] = {"diff": float((parallel - reference).abs().max()), "scale": float(reference.abs().max()),
                            "removed": bool(torch.equal(again, reference)), "tokens": seen}
    return result
