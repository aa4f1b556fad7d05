"""Adaptive gradient clipping: EMA statistics, clipping a spike, skipping NaN steps, DDP rule, Trainer hook."""
import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from opensora.training.grad_clip import AdaptiveGradClip, grad_norm, rank_scale



def set_grad(param, value):
    param.grad = torch.full_like(param, value)


def test_clips_a_spike_to_mean_plus_three_sigma():
    p = torch.nn.Parameter(torch.zeros(4))
    clip = AdaptiveGradClip(beta=0.9, k=3.0, warmup=5, log=False)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):  # norms around 1 (value * 2 = norm of 4 equal entries)
        set_grad(p, 0.5 * (1 + 0.1 * float(torch.randn((), generator=g))))
        assert clip.clip([p])["factor"] == 1.0
    mean, std = clip.mean, math.sqrt(clip.var)
    assert abs(mean - 1) < 0.1 and 0 < std < 0.2
    threshold = clip.threshold
    assert threshold == pytest.approx(mean + 3 * std)
    set_grad(p, 50.0)  # norm 100
    out = clip.clip([p])
    assert out["norm"] == pytest.approx(100.0) and out["factor"] < 0.1
    assert float(grad_norm([p])) == pytest.approx(threshold, rel=1e-5)
    assert clip.clipped == 1 and clip.mean < threshold  # the statistics take the clipped norm, not the spike


def test_skips_nan_and_inf_steps():
    p, q = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))
    clip = AdaptiveGradClip(warmup=0, log=False)
    set_grad(p, 1.0)
    set_grad(q, 1.0)
    clip.clip([p, q])
    count, mean = clip.count, clip.mean
    for bad in (float("nan"), float("inf")):
        set_grad(p, 1.0)
        q.grad = torch.tensor([bad, 1.0])
        assert clip.clip([p, q])["factor"] == 0.0
        assert p.grad.eq(0).all() and q.grad.eq(0).all()
    assert clip.skipped == 2 and clip.count == count and clip.mean == mean


def test_warmup_and_max_norm():
    p = torch.nn.Parameter(torch.zeros(1))
    clip = AdaptiveGradClip(warmup=3, max_norm=2.0, log=False)
    assert clip.threshold == 2.0
    set_grad(p, 5.0)
    assert clip.clip([p])["factor"] == pytest.approx(0.4)
    assert AdaptiveGradClip(warmup=3).threshold == math.inf


def test_rank_rule_single_process():
    assert rank_scale(torch.tensor(1.0), 2.0) == 1.0
    assert rank_scale(torch.tensor(4.0), 2.0) == 0.5  # no normal rank: clipped, never stalled
    assert rank_scale(torch.tensor(float("nan")), 2.0) == 0.0
    p = torch.nn.Parameter(torch.zeros(2))
    clip = AdaptiveGradClip(warmup=0, per_rank=True, log=False)
    set_grad(p, 1.0)
    clip.clip([p])
    set_grad(p, float("nan"))  # non-finite: zeroed
    assert clip.clip([p])["factor"] == 0.0 and p.grad.eq(0).all()


def test_state_round_trip():
    clip = AdaptiveGradClip(log=False)
    clip.mean, clip.var, clip.count, clip.skipped = 1.5, 0.25, 7, 2
    other = AdaptiveGradClip(log=False)
    other.load_state_dict(clip.state_dict())
    assert other.state_dict() == clip.state_dict()


class Tiny(L.LightningModule):
    """A linear model whose loss is NaN at step ``bad_step``; plain SGD so a skipped step changes nothing."""

    def __init__(self, bad_step=3):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.bad_step, self.weights = bad_step, []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = ((self.layer(x) - y) ** 2).mean()
        if self.global_step == self.bad_step:
            loss = loss * float("nan")
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.weights.append(self.layer.weight.detach().clone())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_callback_in_a_trainer_skips_the_nan_step(tmp_path):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(8, 2), torch.randn(8, 1))
    module, clip = Tiny(), AdaptiveGradClip(warmup=1, log=False)
    trainer = L.Trainer(accelerator="cpu", max_steps=6, callbacks=[clip], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(data, batch_size=2))
    assert clip.skipped == 1
    assert torch.equal(module.weights[3], module.weights[2])  # the NaN step left the weights alone
    assert torch.isfinite(module.layer.weight).all() and not torch.equal(module.weights[5], module.weights[3])



def test_rank_rule_with_two_simulated_ranks(monkeypatch):
    """The all-gather logic with a faked 2-rank process group: an abnormal rank is zeroed, the normal one rescaled
    by world / n_normal (so the mean over ranks keeps its size)."""
    dist = torch.distributed
    for norms, expected in [((1.0, float("nan")), (2.0, 0.0)), ((1.0, 1.2), (1.0, 1.0)), ((5.0, 1.1), (0.0, 2.0)),
                            ((5.0, float("inf")), (1.3 / 5 * 2, 0.0)), ((float("nan"), float("inf")), (0.0, 0.0))]:
        for rank in range(2):
            def all_gather(out, tensor, norms=norms):
                for i, t in enumerate(out):
                    t.fill_(norms[i])

            monkeypatch.setattr(dist, "is_initialized", lambda: True)
            monkeypatch.setattr(dist, "get_world_size", lambda: 2)
            monkeypatch.setattr(dist, "get_rank", lambda rank=rank: rank)
            monkeypatch.setattr(dist, "all_gather", all_gather)
            monkeypatch.setattr(dist, "all_reduce", lambda t: t.mul_(2))  # as if the other rank sent the same
            p = torch.nn.Parameter(torch.zeros(1))
            p.grad = torch.tensor([norms[rank]])
            clip = AdaptiveGradClip(warmup=0, per_rank=True, log=False)
            clip.count, clip.mean, clip.var = 10, 1.0, 0.01  # threshold 1.3
            assert clip.clip([p])["factor"] == expected[rank]
            want = 0.0 if expected[rank] == 0 else norms[rank] * expected[rank]
            assert float(p.grad) == pytest.approx(want)  # scaled, summed over 2 "ranks", divided by 2
            finite = [n for n in norms if math.isfinite(n)]
            assert clip.count == (11 if finite else 10) and clip.skipped == (0 if finite else 1)


@pytest.fixture
def one_rank_group():
    """A one-process gloo group (the sharded code paths need an initialised process group)."""
    import socket

    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group is already initialised")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_sharded_grad_norm_equals_the_plain_norm(one_rank_group):
    """FSDP2 gradients are DTensor shards: grad_norm takes the global norm (here over one rank: the plain norm)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (1,))
    params = [torch.nn.Parameter(torch.zeros(s)) for s in ((4, 3), (5,))]
    plain = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) for i, p in enumerate(params)]
    for p, g in zip(params, plain):
        p.grad = g
    expected = grad_norm(params)
    assert expected == pytest.approx(math.sqrt(sum(float(g.square().sum()) for g in plain)), rel=1e-6)
    for p, g in zip(params, plain):
        p.grad = distribute_tensor(g, mesh, [Shard(0)])
    assert float(grad_norm(params)) == pytest.approx(float(expected), rel=1e-6)


def test_per_rank_rule_is_refused_on_a_sharded_model(one_rank_group):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    fully_shard(model, mesh=init_device_mesh("cpu", (1,)))
    with pytest.raises(ValueError, match="per_rank=True.*FSDP"):
        AdaptiveGradClip(per_rank=True).on_train_start(None, model)
