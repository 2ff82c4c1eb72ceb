"""Defaults that follow the data: auto architecture, standardization inside the model, the
attack scale (a fraction of each feature's training range: P1..P99 for table columns)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.adversarial.scale import attack_scale
from tasks.data.dataset import Dataset
from tasks.data.schema import infer_schema
from tasks.errors import ConfigError
from tasks.models.auto import arch_for, resolve_for_data
from tasks.models.config import ModelConfig
from tasks.models.serialize import load_model, model_spec, same_architecture
from tasks.models.standardize import fit_standardization
from tasks.models.zoo import MLP, SmallCNN, build_model
from tasks.settings import load_settings
from tasks.store.codecs import state_dict_to_bytes


def test_auto_arch_and_an_explicit_choice_that_cannot_fit():
    assert arch_for("auto", (1, 8, 8)) == "cnn" and arch_for("auto", (30,)) == "mlp"
    assert isinstance(build_model(ModelConfig(), (30,), 2), MLP)
    assert isinstance(build_model(ModelConfig(), (3, 8, 8), 2), SmallCNN)
    s = load_settings(overrides={"model.arch": "cnn"}, environ={})
    with pytest.raises(ConfigError, match=r"model.arch='cnn' needs image-shaped samples.*\(30,\)"):
        resolve_for_data(s, (30,))
    s = load_settings(
        overrides={"tuning.search_space": {"arch": {"type": "choice", "values": ["mlp", "cnn"]}}}, environ={}
    )
    with pytest.raises(ConfigError, match=r"tuning.search_space\['arch'\] offers 'cnn'"):
        resolve_for_data(s, (30,))
    assert resolve_for_data(load_settings(environ={}), (30,)).model.arch == "mlp"


def test_standardization_is_part_of_the_stored_model():
    r = np.random.default_rng(0)
    x = (r.normal(size=(500, 4)) * [1, 100, 0.01, 0] + [0, 1000, 5, 7]).astype(np.float32)
    st = fit_standardization(x)
    assert st.axis == "feature" and np.allclose(st.mean, x.mean(0), rtol=1e-4)
    assert st.std[3] == 1.0  # a constant column is only centred
    spec = model_spec(ModelConfig(), (4,), 3, st)
    assert spec["model"]["arch"] == "mlp" and spec["standardize"]["axis"] == "feature"
    model = build_model(ModelConfig(), (4,), 3, st)
    z = model.standardize(torch.from_numpy(x))
    assert torch.allclose(z[:, :3].mean(0), torch.zeros(3), atol=1e-3) and torch.allclose(
        z[:, :3].std(0), torch.ones(3), atol=1e-2
    )
    # Stored as spec + safetensors, it rebuilds with the same statistics and outputs on raw inputs.
    weights = state_dict_to_bytes(model)
    assert not any("standardize" in k for k in model.state_dict())
    back = load_model(spec, weights)
    model.eval(), back.eval()
    assert torch.allclose(model(torch.from_numpy(x)), back(torch.from_numpy(x)))
    # Other statistics, same architecture: a warm start can load the weights.
    assert same_architecture(spec, model_spec(ModelConfig(), (4,), 3, fit_standardization(x[:100])))
    assert not same_architecture(spec, model_spec(ModelConfig(width=32), (4,), 3, st))
    imgs = np.random.default_rng(1).uniform(0, 1, (50, 3, 4, 4)).astype(np.float32)
    assert fit_standardization(imgs).axis == "channel" and len(fit_standardization(imgs).mean) == 3


def test_attack_scale_is_a_fraction_of_each_columns_central_training_range():
    r = np.random.default_rng(0)
    x = np.stack([r.uniform(20, 90, 300), r.uniform(0, 1, 300), r.lognormal(0, 1, 300)], 1).astype(np.float32)
    x[0, 2] = 1000.0  # one extreme row: it must not stretch the scale of its column
    schema = infer_schema(Dataset(x, (x[:, 1] > 0.5).astype(np.int64)))
    scale = attack_scale(schema, x, np.array([[95.0, 0.5, 1.0]], np.float32))
    # 0.1 in unit coordinates is a tenth of each column's P1..P99 range (about 6.9 years; 0.1 of the
    # ratio), whatever its extremes: the outlier column's step follows its bulk, not the 1000.
    p01, p99 = np.quantile(x.astype(np.float64), [0.01, 0.99], axis=0)
    step = (scale.origin + 0.1 * scale.span) - scale.origin
    for j in range(3):
        assert step[j] == pytest.approx(0.1 * (p99[j] - p01[j]), rel=1e-4)
    assert step[0] == pytest.approx(6.9, abs=0.3)
    assert step[2] < 0.01 * (x[:, 2].max() - x[:, 2].min())
    # The box holds the whole training range (past P1 and P99) and the clean held-out value above
    # the training maximum.
    u = scale.to_unit(x)
    assert np.all(u >= scale.lo - 1e-6) and np.all(u <= scale.hi + 1e-6)
    assert scale.lo[0] < 0.0 < 1.0 < scale.hi[2]
    assert scale.hi[0] >= scale.to_unit(np.array([[95.0, 0.5, 1.0]], np.float32))[0, 0] - 1e-6
    model = build_model(ModelConfig(), (3,), 2, fit_standardization(x))
    wrapped = scale.wrap(model)
    model.eval()
    assert torch.allclose(wrapped(torch.from_numpy(u)), model(torch.from_numpy(x)), atol=1e-4)


def test_attack_scale_of_an_almost_constant_column_falls_back_to_its_range():
    x = np.zeros((200, 2), np.float32)
    x[:, 0] = np.linspace(0, 1, 200)
    x[0, 1] = 5.0  # P1 == P99 == 0: the central range is empty
    schema = infer_schema(Dataset(x, (x[:, 0] > 0.5).astype(np.int64)))
    scale = attack_scale(schema, x)
    assert scale.span[1] == pytest.approx(5.0) and scale.origin[1] == 0.0
    assert np.all(np.isfinite(scale.to_unit(x)))
