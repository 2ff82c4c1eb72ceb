"""The bracket plans against Algorithm 1 (hand-computed) and Ray's scheduler rules; the CLI text."""

import json

import pytest

from tasks.errors import ConfigError
from tasks.tuning.cli import format_plan
from tasks.tuning.plan import hyperband_plan, ray_hyperband_plan, ray_rung_milestones


def rungs(plan):
    return {b.s: [(r.n, r.r) for r in b.rungs] for b in plan.brackets}


def test_algorithm1_r81_eta3():
    p = hyperband_plan(81, 3)
    assert p.s_max == 4 and p.budget_per_bracket == 405
    assert [b.s for b in p.brackets] == [4, 3, 2, 1, 0]
    assert [b.rungs[0].n for b in p.brackets] == [81, 34, 15, 8, 5]  # not Table 1's 81/27/9/6/5
    r = rungs(p)
    assert r[4] == [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)]
    assert r[3] == [(34, 3), (11, 9), (3, 27), (1, 81)]
    assert r[2] == [(15, 9), (5, 27), (1, 81)]
    assert r[1] == [(8, 27), (2, 81)]
    assert r[0] == [(5, 81)]
    assert [b.total_epochs for b in p.brackets] == [405, 363, 351, 378, 405]
    assert p.num_configurations == 143


def test_algorithm1_r27_eta3():
    r = rungs(hyperband_plan(27, 3))
    assert r == {
        3: [(27, 1), (9, 3), (3, 9), (1, 27)],
        2: [(12, 3), (4, 9), (1, 27)],
        1: [(6, 9), (2, 27)],
        0: [(4, 27)],
    }


def test_algorithm1_r16_eta2():
    p = hyperband_plan(16, 2)
    assert p.s_max == 4 and p.budget_per_bracket == 80
    assert rungs(p) == {
        4: [(16, 1), (8, 2), (4, 4), (2, 8), (1, 16)],
        3: [(10, 2), (5, 4), (2, 8), (1, 16)],
        2: [(7, 4), (3, 8), (1, 16)],
        1: [(5, 8), (2, 16)],
        0: [(5, 16)],
    }


def test_algorithm1_fractional_r():
    # R=10 is not a power of 3: s_max = floor(log3 10) = 2 and r = R eta^-s is fractional.
    p = hyperband_plan(10, 3)
    r = rungs(p)
    assert p.s_max == 2
    assert [n for n, _ in r[2]] == [9, 3, 1] and r[2][0][1] == pytest.approx(10 / 9) and r[2][2][1] == 10
    assert [n for n, _ in r[1]] == [5, 1] and r[1][0][1] == pytest.approx(10 / 3)
    assert r[0] == [(3, 10)]


def test_algorithm1_smallest():
    assert rungs(hyperband_plan(3, 3)) == {1: [(3, 1), (1, 3)], 0: [(2, 3)]}


def test_resumed_epochs_count_only_added_epochs():
    b = hyperband_plan(9, 3).brackets[0]  # s=2: 9@1, 3@3, 1@9
    assert b.total_epochs == 9 + 9 + 9
    assert b.resumed_epochs == 9 * 1 + 3 * 2 + 1 * 6


def test_ray_plan_keeps_ceil_survivors_and_fills_s0_first():
    p = ray_hyperband_plan(9, 3)
    assert [b.s for b in p.brackets] == [0, 1, 2]
    assert rungs(p) == {0: [(3, 9)], 1: [(5, 3), (2, 9)], 2: [(9, 1), (3, 3), (1, 9)]}
    # R=81: 34 -> ceil(34/3)=12 (Algorithm 1 keeps floor: 11)
    assert [r.n for r in ray_hyperband_plan(81, 3).brackets[3].rungs] == [34, 12, 4, 2]


def test_ray_milestones_cap_and_round():
    assert ray_rung_milestones(81, 3, 4) == [1, 3, 9, 27, 81]
    assert ray_rung_milestones(10, 3, 1) == [3, 9]  # int(10/3)=3, 3*3=9 <= 10: Ray stops at 9, not R
    assert ray_hyperband_plan(16, 3).s_max == 3  # round(log3 16 = 2.52); Algorithm 1: floor -> 2
    assert hyperband_plan(16, 3).s_max == 2


@pytest.mark.parametrize("max_t,eta,key", [(2, 3, "max_t"), (27, 1, "eta"), (0, 3, "max_t")])
def test_bad_plan_args(max_t, eta, key):
    with pytest.raises(ConfigError, match=f"tuning.{key}"):
        hyperband_plan(max_t, eta)


def test_format_plan_text():
    text = format_plan(81, 3, as_json=False)
    assert "First-rung sizes (Algorithm 1): 81/34/15/8/5" in text
    assert "81/27/9/6/5" in text and "follows Algorithm 1" in text
    assert "ceil(n/eta)" in text and "HyperBandScheduler" in text
    assert "143 configurations, 1902 epochs" in text
    # the s=3 bracket of Algorithm 1, rung by rung
    assert "  3   0     34        3       102   363 (276)" in text
    assert "  3   1     11        9        99" in text


def test_format_plan_json():
    d = json.loads(format_plan(27, 3, as_json=True))
    assert d["follows"] == "algorithm_1"
    assert d["first_rung_sizes"] == [27, 12, 6, 4]
    assert d["algorithm_1"]["brackets"][0]["rungs"][1] == {"i": 1, "n": 9, "r": 3.0}
    assert d["ray_hyperband"]["brackets"][0]["rungs"] == [{"i": 0, "n": 4, "r": 27.0}]
    assert any("Table 1" in n for n in d["notes"])


def test_format_plan_rejects_r_below_eta():
    with pytest.raises(ConfigError, match="must be at least"):
        format_plan(2, 3)


@pytest.mark.parametrize("args,key", [(["--max-t", "0"], "max_t"), (["--eta", "0"], "eta")])
def test_cli_plan_refuses_zero_instead_of_using_the_default(args, key):
    from typer.testing import CliRunner

    from flows.cli import app

    r = CliRunner().invoke(app, ["hyperband-plan", *args])
    assert r.exit_code == 2, r.output
    assert f"tuning.{key}" in r.output and "R=27" not in r.output
