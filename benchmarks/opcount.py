"""Operator, copy and allocation counts of one call, from the torch profiler (CPU; no GPU needed).

:func:`count_ops` runs a function under ``torch.profiler`` with shapes and memory recorded and summarises the
events:

* ``ops``: top-level aten operator calls by kind (calls made by Python code, not the ones nested inside other
  aten ops), e.g. ``{"conv3d": 40, "cat": 22, ...}``;
* ``copies``: every materialising copy, nested ones included (``aten::copy_`` inside ``contiguous``/``clone``/
  ``constant_pad_nd``/``layer_norm`` ..., plus ``aten::cat``), as ``{kind: [calls, bytes]}`` where ``kind`` names
  the top-level op that caused it (``"layer_norm/copy_"``, ``"cat"``, ``"constant_pad_nd/copy_"``). Copies made
  by convolution kernels to initialise their output with the bias are listed as ``"<conv>/copy_"`` too;
* ``alloc_bytes``: bytes of all CPU allocations made during the call (the sum of positive allocation events,
  so every temporary counts, whether or not it is freed again).

Copy bytes assume the element size of ``dtype_size`` (4 for float32), because the profiler records shapes only.
"""
from __future__ import annotations

import collections
import math
from typing import Callable, Dict

from torch.profiler import ProfilerActivity, profile

_COPY_LEAVES = ("aten::copy_", "aten::cat")


def _root(event):
    while event.cpu_parent is not None and event.cpu_parent.name.startswith("aten::"):
        event = event.cpu_parent
    return event


def count_ops(fn: Callable[[], object], dtype_size: int = 4) -> Dict[str, object]:
    """Run ``fn()`` once under the profiler; returns ``{"ops", "op_calls", "copies", "copy_calls", "copy_bytes",
    "alloc_bytes"}`` (see the module docstring)."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, profile_memory=True) as prof:
        fn()
    ops: collections.Counter = collections.Counter()
    copies: Dict[str, list] = collections.defaultdict(lambda: [0, 0])
    alloc = 0
    for ev in prof.events():
        if ev.self_cpu_memory_usage > 0:
            alloc += ev.self_cpu_memory_usage
        if not ev.name.startswith("aten::"):
            continue
        parent = ev.cpu_parent
        if parent is None or not parent.name.startswith("aten::"):
            ops[ev.name[6:]] += 1
        if ev.name in _COPY_LEAVES:
            root = _root(ev)
            kind = ev.name[6:] if root is ev else f"{root.name[6:]}/{ev.name[6:]}"
            if ev.name == "aten::cat":
                nbytes = max(ev.self_cpu_memory_usage, 0)
            else:
                nbytes = math.prod(ev.input_shapes[0]) * dtype_size if ev.input_shapes and ev.input_shapes[0] else 0
            copies[kind][0] += 1
            copies[kind][1] += nbytes
    return {
        "ops": dict(ops), "op_calls": sum(ops.values()),
        "copies": {k: tuple(v) for k, v in copies.items()},
        "copy_calls": sum(v[0] for v in copies.values()), "copy_bytes": sum(v[1] for v in copies.values()),
        "alloc_bytes": alloc,
    }


def graph_breaks(fn: Callable, *args) -> Dict[str, object]:
    """``torch._dynamo.explain`` of ``fn(*args)``: graphs, graph breaks and the first break reasons."""
    import torch._dynamo

    torch._dynamo.reset()
    out = torch._dynamo.explain(fn)(*args)
    reasons = sorted({str(getattr(r, "reason", r)).splitlines()[0][:100] for r in out.break_reasons})
    return {"graphs": out.graph_count, "breaks": out.graph_break_count, "reasons": reasons[:3]}
