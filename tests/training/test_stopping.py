"""Early stopping on the calibrated validation score (``training.stopping: calibrated``)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from landslide_hazard.training.epochs import platt_nll


def _cells(n: int = 3000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of an over-confident, shifted model and labels drawn from the true ones."""
    rng = np.random.default_rng(seed)
    true = rng.normal(-1.5, 1.0, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-true))).astype(np.float32)
    z = 2.5 * true + 1.0 + rng.normal(0, 0.3, n)  # too steep and too high
    return torch.tensor(z, dtype=torch.float32), torch.tensor(y)


def test_platt_nll_equals_scikit_learns_unpenalised_logistic_fit():
    z, y = _cells()
    got = platt_nll(z, y)
    fit = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000)  # no penalty
    fit.fit(z.double().numpy()[:, None], y.numpy())
    want = log_loss(y.numpy(), fit.predict_proba(z.double().numpy()[:, None])[:, 1])
    assert got == pytest.approx(want, rel=1e-7)
    # and it is what calibration removes: below the raw network's own log-likelihood
    raw = float(torch.nn.functional.binary_cross_entropy_with_logits(z.double(), y.double()))
    assert got < raw


def test_platt_nll_is_the_same_from_shards_summed_across_ranks():
    """Data-parallel ranks each hold part of the cells and sum every Newton step's statistics
    (``all_reduce_sums``); two threads with a barrier stand in for two ranks."""
    z, y = _cells(seed=1)
    shards = [(z[:1234], y[:1234]), (z[1234:], y[1234:])]
    barrier = threading.Barrier(2)
    posted: list[list[float] | None] = [None, None]
    results: list[float] = [0.0, 0.0]

    def rank(i: int) -> None:
        def reduce(values):
            posted[i] = list(values)
            barrier.wait()
            total = [a + b for a, b in zip(*posted, strict=True)]  # type: ignore[arg-type]
            barrier.wait()  # both have read before either posts again
            return total

        results[i] = platt_nll(*shards[i], reduce)

    threads = [threading.Thread(target=rank, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results[0] == pytest.approx(platt_nll(z, y), rel=1e-9)
    assert results[1] == results[0]


def test_platt_nll_of_one_class_is_nan():
    z = torch.randn(50)
    assert np.isnan(platt_nll(z, torch.zeros(50)))
    assert np.isnan(platt_nll(z, torch.ones(50)))


def test_fit_watches_the_calibrated_score_when_asked(tmp_path, config_factory, monkeypatch):
    from landslide_hazard.training import fit as fit_module
    from landslide_hazard.training.loop import train

    real_raw, real_calibrated = fit_module.eval_loss, fit_module.eval_calibrated_nll
    calls: list[str] = []

    def raw(model, stage, *args):
        calls.append(f"raw {stage.name}")
        return real_raw(model, stage, *args)

    def calibrated(model, stage, *args):
        calls.append(f"calibrated {stage.name}")
        return real_calibrated(model, stage, *args)

    monkeypatch.setattr(fit_module, "eval_loss", raw)
    monkeypatch.setattr(fit_module, "eval_calibrated_nll", calibrated)
    run = train(config_factory(tmp_path, stopping="calibrated"), progress=False)
    assert calls.count("calibrated susceptibility") == 2  # 2 epochs (no start: it stacks)
    assert "raw susceptibility" not in calls
    log = (run / "train.log").read_text()
    assert "susceptibility epoch 2/2" in log and "finetune epoch 1/1" in log
    calls.clear()
    train(config_factory(tmp_path / "b"), progress=False)  # the default watches the loss
    assert "raw susceptibility" in calls and not any(c.startswith("calibrated") for c in calls)
