"""Security defaults: a local Ray listens on 127.0.0.1 only, with no dashboard; Flower's simulation
Ray has no dashboard either. (Prefect server auth and Flower TLS/SuperNode auth: docs/RELIABILITY.md;
TLS with SuperNode authentication is exercised by tests/federated/test_deployment.py.)"""

from __future__ import annotations



def test_local_ray_binds_127_0_0_1_without_dashboard(monkeypatch, figures):
    import ray

    from tasks.tuning.config import TuningConfig
    from tasks.tuning.search import connect_ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda *a, **kw: calls.append(kw))
    assert connect_ray(TuningConfig()) is True
    kw = calls[0]
    figures.update(ray_init_kwargs={k: kw[k] for k in ("include_dashboard", "dashboard_host", "_node_ip_address")})
    assert "address" not in kw  # a local Ray, not a remote cluster
    assert kw["include_dashboard"] is False and kw["dashboard_host"] == "127.0.0.1"
    assert kw["_node_ip_address"] == "127.0.0.1"


def test_flower_simulation_ray_has_no_dashboard(figures):
    import inspect

    from tasks.federated import simulate

    src = inspect.getsource(simulate)
    figures.update(include_dashboard_false="\"include_dashboard\": False" in src)
    assert "\"include_dashboard\": False" in src
