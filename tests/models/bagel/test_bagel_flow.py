"""The flow schedule and CFG settings (facts of engine-notes §1.3)."""
import pytest
import torch

from unicorn.models.bagel_flow import FlowParams, cfg_combine


def test_schedule_has_num_timesteps_minus_one_steps_and_cfg_on_41_of_49():
    params = FlowParams()  # 50 timesteps, shift 3, interval (0.4, 1]
    t, dt = params.schedule()
    assert len(t) == 49 and float(t[0]) == 1.0 and float(dt.sum()) == pytest.approx(1.0)
    assert sum(params.scales_at(float(x))[0] > 1 for x in t) == 41
    assert FlowParams(cfg_interval=(0.0, 1.0)).scales_at(float(t[-1])) == (4.0, 1.5)


def test_image_cfg_only_inside_text_cfg():
    v, u = torch.randn(5, 4), torch.randn(5, 4)
    assert torch.equal(cfg_combine(v, u, u, text_scale=1.0, img_scale=2.0), v)


def test_global_renorm_is_per_image():
    # two images combined separately keep their own norms; one norm over both would not (the official batch bug)
    a, b = torch.randn(6, 4), torch.randn(6, 4) * 10
    ua, ub = torch.randn(6, 4), torch.randn(6, 4)
    ga = cfg_combine(a, ua, None, 4.0, 1.0)
    assert float(ga.norm()) <= float(a.norm()) * (1 + 1e-6)
    joint = cfg_combine(torch.cat((a, b)), torch.cat((ua, ub)), None, 4.0, 1.0)[:6]
    assert not torch.allclose(joint, ga)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_timesteps=1), "num_timesteps must be an integer >= 2"),
    (dict(cfg_renorm_type="per_pixel"), "cfg_renorm_type 'per_pixel' is not one of global, channel, text_channel"),
    (dict(cfg_interval=(0.9, 0.1)), "low <= high"),
    (dict(timestep_shift=0), "timestep_shift must be > 0"),
])
def test_bad_params(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FlowParams(**kwargs)
