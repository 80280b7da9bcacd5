"""training.average: Polyak averaging of the weights (``training.average_epochs``)."""

import pytest
import torch

from landslide_hazard.training.average import WeightAverage
from landslide_hazard.training.loop import run_training, train


def _module():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))


def _step(module, value):
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(value)
        module[1].running_mean.fill_(value)
        module[1].num_batches_tracked += 1


def test_running_mean_then_exponential_average_by_hand():
    m = _module()
    avg = WeightAverage(m, horizon_steps=4)
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    for v in values:
        _step(m, v)
        avg.update()
    # steps 1-4: the plain mean (weights 1, 1/2, 1/3, 1/4) -> 2.5; then 1/4 per step
    expected = 2.5
    for v in values[4:]:
        expected += (v - expected) / 4
    w = avg.shadow["0.weight"]
    assert torch.allclose(w, torch.full_like(w, expected))
    assert torch.allclose(avg.shadow["1.running_mean"], torch.full((2,), expected))
    assert int(avg.shadow["1.num_batches_tracked"]) == len(values)  # counters: the latest


def test_applied_swaps_the_average_in_and_restores_the_weights():
    m = _module()
    avg = WeightAverage(m, horizon_steps=2)
    _step(m, 1.0)
    avg.update()
    _step(m, 3.0)
    avg.update()
    _step(m, 7.0)
    with avg.applied():
        assert torch.allclose(m[0].weight, torch.full_like(m[0].weight, 2.0))
    assert torch.allclose(m[0].weight, torch.full_like(m[0].weight, 7.0))


def test_state_round_trip():
    m = _module()
    a = WeightAverage(m, horizon_steps=3)
    for v in (1.0, 2.0):
        _step(m, v)
        a.update()
    b = WeightAverage(_module(), horizon_steps=3)
    b.load_state_dict(a.state_dict())
    assert b.count == 2
    for key in a.shadow:
        assert torch.equal(a.shadow[key], b.shadow[key])


def test_horizon_below_one_step_is_refused():
    with pytest.raises(ValueError, match="horizon_steps"):
        WeightAverage(_module(), horizon_steps=0.5)


def test_averaged_run_differs_and_resumes_exactly(tmp_path, config_factory):
    """With averaging on, the kept weights are the average (not the plain run's), and a crash
    mid-stage resumes to the same weights (the average is checkpointed)."""
    extra = {"max_epochs_susceptibility": 3, "average_epochs": 1.0}
    ref = train(config_factory(tmp_path / "ref", **extra), progress=False)
    plain = train(config_factory(tmp_path / "plain", max_epochs_susceptibility=3), progress=False)
    w_ref = torch.load(ref / "model.pt", weights_only=False)["state_dict"]
    w_plain = torch.load(plain / "model.pt", weights_only=False)["state_dict"]
    assert any(not torch.equal(w_ref[k], w_plain[k]) for k in w_ref)

    class Crash(RuntimeError):
        pass

    def boom(stage, epoch):
        if (stage, epoch) == ("susceptibility", 1):
            raise Crash("simulated crash")

    cfg = config_factory(tmp_path / "crash", **extra)
    with pytest.raises(Crash):
        run_training(cfg, progress=False, epoch_callback=boom)
    resumed = train(cfg, progress=False)
    w_res = torch.load(resumed / "model.pt", weights_only=False)["state_dict"]
    for k in w_ref:
        assert torch.equal(w_ref[k], w_res[k]), k
