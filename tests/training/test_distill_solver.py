"""The LCM math against the diffusers pipelines' and schedulers' own definitions."""

import torch

from diffcli.training.distill import solver as S


def test_guidance_embedding_matches_pipeline():
    from diffusers import StableDiffusionPipeline

    w = torch.tensor([0.0, 2.5, 7.0])
    ours = S.guidance_embedding(w, 256)
    theirs = StableDiffusionPipeline.get_guidance_scale_embedding(None, w, embedding_dim=256)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_boundary_scalings_match_lcm_scheduler():
    from diffusers import LCMScheduler

    sched = LCMScheduler()
    for t in (0, 19, 499, 999):
        c_skip, c_out = S.boundary_scalings(torch.tensor([t]))
        ref_skip, ref_out = sched.get_scalings_for_boundary_condition_discrete(t)
        assert abs(c_skip.item() - ref_skip) < 1e-6 and abs(c_out.item() - ref_out) < 1e-6
    c_skip, c_out = S.boundary_scalings(torch.tensor([0]))
    assert c_skip.item() == 1.0 and c_out.item() == 0.0  # f(x, 0) = x


def test_ddim_step_and_conversions_are_exact_for_true_x0_and_noise():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    acp = sched.alphas_cumprod
    solver = S.DDIMSolver(acp, 1000, 50)
    assert solver.ddim_timesteps[0] == 19 and solver.ddim_timesteps[-1] == 999
    x0, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    index = torch.tensor([10, 30])
    t = solver.ddim_timesteps[index]
    xt = sched.add_noise(x0, eps, t)
    a, s = acp.sqrt(), (1 - acp).sqrt()
    for kind, out in (("epsilon", eps), ("v_prediction", sched.get_velocity(x0, eps, t)), ("sample", x0)):
        assert torch.allclose(S.predicted_x0(out, t, xt, kind, a, s), x0, atol=1e-4)
        assert torch.allclose(S.predicted_noise(out, t, xt, kind, a, s), eps, atol=1e-3)
    prev = solver.ddim_step(x0, eps, index)
    assert torch.allclose(prev, sched.add_noise(x0, eps, t - solver.step_ratio), atol=1e-5)


def test_losses():
    a, b = torch.zeros(4), torch.ones(4)
    assert S.consistency_loss(a, b, "l2").item() == 1.0
    assert 0.99 < S.consistency_loss(a, b, "huber").item() < 1.0
