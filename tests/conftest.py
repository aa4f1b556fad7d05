import hashlib
import os

import pytest
import torch

# The tests use tiny models, for which one thread is fastest; several threads also thrash on a shared machine.
torch.set_num_threads(1)

DATA = os.path.join(os.path.dirname(__file__), "data")
SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "fixtures")


def make_tiny_vae(seed: int = 0, **overrides):
    """A small random WF-VAE (perturbed so that every tensor, norms included, matters)."""
    from wfvae import WFVAE

    cfg = dict(base_channels=8, latent_dim=4, encoder_energy_flow_hidden_size=8, decoder_energy_flow_hidden_size=8,
               norm_type="layernorm", t_interpolation="trilinear")
    cfg.update(overrides)
    torch.manual_seed(seed)
    vae = WFVAE(**cfg).eval()
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return vae


@pytest.fixture
def tiny_vae():
    return make_tiny_vae()


def tree_snapshot(root) -> dict:
    """Every file and folder under ``root`` (hidden ones too): folders as 'dir', links by target, files by size and
    content hash (size and mtime above 1 MiB). Equal snapshots: nothing was added, removed or changed."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(folder, d), root)] = "dir"
        for name in files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            if os.path.islink(path):
                out[os.path.relpath(path, root)] = ("link", os.readlink(path))
            elif st.st_size > 1 << 20:
                out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
            else:
                with open(path, "rb") as fh:
                    out[os.path.relpath(path, root)] = (st.st_size, hashlib.sha1(fh.read()).hexdigest())
    return out
