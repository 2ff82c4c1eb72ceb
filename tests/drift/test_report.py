import json
import math

from tasks.drift.report import DriftReport, markdown_summary, pvalue_plot_png, reports_from_json, reports_to_json


def _reports():
    out = []
    for i in range(6):
        out.append(DriftReport("ks_softmax", f"b{i}", i >= 3, 0.1 * i, 0.005, 0.5 if i < 3 else 1e-4))
        out.append(DriftReport("mmd_online", f"b{i}", i >= 4, 0.01 * i, 0.03, None, kind="online"))
    return out


def test_json_round_trip_and_nan_is_null():
    rs = _reports() + [DriftReport("lsdd", "b9", False, math.nan, 0.05, 1.0)]
    text = reports_to_json(rs)
    assert json.loads(text)[-1]["statistic"] is None
    back = reports_from_json(text)
    assert [r.to_dict() for r in back] == [r.to_dict() for r in rs]
    assert json.loads(rs[0].to_json())["detector"] == "ks_softmax"


def test_plot_and_markdown():
    rs = _reports()
    png = pvalue_plot_png(rs, drift_span=(3, 5))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    md = markdown_summary(rs)
    assert "| b3 | ks_softmax | **yes** |" in md
    assert "- ks_softmax: drift in 3 of 6 batches (b3, b4, b5)" in md
    assert "- mmd_online: drift in 2 of 6 batches" in md
    assert "No batches" in markdown_summary([])
