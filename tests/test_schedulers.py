"""The samplers are set up as the v1.3 release samples: v-prediction, zero terminal SNR, trailing spacing."""
import pytest
import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, UniPCMultistepScheduler)

import opensora.pipelines.schedulers as s

RELEASE_SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
                        prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing")


def test_default_is_the_release_sampler():
    sch = s.make_scheduler()
    assert type(sch) is EulerAncestralDiscreteScheduler
    for key, value in RELEASE_SCHEDULE.items():
        assert sch.config[key] == value, key
    assert (s.DEFAULT_STEPS, s.DEFAULT_GUIDANCE, s.DEFAULT_NUM_FRAMES, s.DEFAULT_HEIGHT, s.DEFAULT_WIDTH) == \
        (100, 7.5, 93, 352, 640)
    sch.set_timesteps(s.DEFAULT_STEPS)
    assert len(sch.timesteps) == 100 and sch.timesteps[0] == 999  # trailing: starts at the last training step
    assert sch.alphas_cumprod[-1] < 1e-6  # zero terminal SNR (diffusers keeps 2^-24 for the Euler variants)
    assert float(sch.init_noise_sigma) == pytest.approx(4096.0)


@pytest.mark.parametrize("name,cls", [("euler_ancestral", EulerAncestralDiscreteScheduler), ("ddim", DDIMScheduler),
                                      ("dpm++", DPMSolverMultistepScheduler), ("euler", EulerDiscreteScheduler),
                                      ("ddpm", DDPMScheduler), ("unipc", UniPCMultistepScheduler)])
def test_every_solver_shares_the_noise_schedule(name, cls):
    sch = s.make_scheduler(name)
    assert type(sch) is cls and s.scheduler_name(sch) == name
    for key, value in RELEASE_SCHEDULE.items():
        assert sch.config[key] == value, (name, key)
    if name in ("ddim", "ddpm"):
        assert sch.config.clip_sample is False  # latents are not bounded to [-1, 1]
    sch.set_timesteps(10)
    assert int(sch.timesteps[0]) == 999 and len(sch.timesteps) == 10
    ref = torch.as_tensor(s.make_scheduler("ddpm").alphas_cumprod[:-1])
    assert torch.allclose(torch.as_tensor(sch.alphas_cumprod[:-1]).float(), ref.float())


def test_overrides_and_errors():
    assert s.make_scheduler("dpm++", solver_order=3).config.solver_order == 3
    assert s.make_scheduler(prediction_type="epsilon").config.prediction_type == "epsilon"
    with pytest.raises(ValueError, match="does not take"):
        s.make_scheduler("euler", clip_sample=True)
    with pytest.raises(ValueError, match="unknown scheduler 'pndm'"):
        s.make_scheduler("pndm")
    a, b = s.make_scheduler(), s.make_scheduler()
    assert a is not b  # fresh, independent state


def test_release_prompts():
    assert s.NEGATIVE_PROMPT.split() == (
        "nsfw, lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, "
        "worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry.").split()
    assert " ".join(s.POSITIVE_PROMPT_TEMPLATE.format("a cat").split()) == "high quality, high aesthetic, a cat"
