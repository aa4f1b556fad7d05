"""Ghost-trail and latent-grid measures: zero / one on clean renders, clearly more with the artefact added."""
import numpy as np

from opensora.synthetic.artifacts import ghost_fraction, grid_excess
from opensora.synthetic.shapes import all_triples, make_spec, render_clip


def test_clean_renders_have_no_ghost_and_no_grid():
    rng = np.random.default_rng(0)
    for triple in all_triples()[::7]:
        clip = render_clip(make_spec(*triple, rng), 9, 96)
        assert ghost_fraction(clip) < 0.01, triple
        assert abs(grid_excess(clip)) < 2.0, triple   # striped backgrounds line up by chance up to ~1.2


def test_a_trail_and_grid_stripes_are_measured():
    rng = np.random.default_rng(1)
    clip = render_clip(make_spec("red", "circle", "right", rng, background="gray"), 9, 96).astype(np.float32)
    trail = clip.copy()
    first = clip[0]
    on = (first.max(-1) - first.min(-1)) > 100                                # the object of frame 0
    trail[6:, on] = first[on]                                                 # left behind in the last frames
    assert ghost_fraction(trail.astype(np.uint8)) > 0.03 and ghost_fraction(trail[-1:].astype(np.uint8)) > 0.3 and ghost_fraction(clip.astype(np.uint8)) < 0.01
    striped = clip.copy()
    striped[:, :, 15::16] += 12.0                                          # a line every 16 pixels
    assert grid_excess(np.clip(striped, 0, 255).astype(np.uint8)) > 5.0
    assert ghost_fraction(np.full((2, 16, 16, 3), 128, np.uint8)) == 0.0
