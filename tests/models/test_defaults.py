"""Defaults that follow the data: auto architecture, standardization inside the model, the
attack scale (a fraction of each feature's training range)."""

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


def test_attack_scale_is_a_fraction_of_each_features_training_range():
    r = np.random.default_rng(0)
    x = np.stack([r.uniform(20, 90, 300), r.uniform(0, 1, 300)], 1).astype(np.float32)
    schema = infer_schema(Dataset(x, (x[:, 1] > 0.5).astype(np.int64)))
    scale = attack_scale(schema, x, np.array([[95.0, 0.5]], np.float32))
    u = scale.to_unit(x)
    assert u.min() >= 0 and u.max() <= 1 + 1e-6
    # 0.1 in unit coordinates is a tenth of each feature's own range (about 7 years, 0.1 of the ratio).
    step = scale.origin + 0.1 * scale.span - scale.origin
    assert step[0] == pytest.approx(0.1 * (x[:, 0].max() - x[:, 0].min()), rel=1e-5)
    assert step[1] == pytest.approx(0.1 * (x[:, 1].max() - x[:, 1].min()), rel=1e-5)
    # The box holds the clean held-out value above the training maximum.
    assert scale.hi[0] > 1.0 and scale.lo[0] == 0.0
    model = build_model(ModelConfig(), (2,), 2, fit_standardization(x))
    wrapped = scale.wrap(model)
    model.eval()
    assert torch.allclose(wrapped(torch.from_numpy(u)), model(torch.from_numpy(x)), atol=1e-4)
    assert list(wrapped.parameters()) == list(model.parameters())
