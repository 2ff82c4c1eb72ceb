"""The Prefect UI in a real headless Chromium (Debian's chromium + chromium-driver, Selenium; nothing
downloads a browser): the three deployments with their schedule and trigger, the training run with
its artifacts (metrics table, learning-curve plot). Screenshots go to test-output/ui/."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.fixtures.servers import using_server

pytestmark = [pytest.mark.slow, pytest.mark.integration]

OUT = Path(__file__).resolve().parents[2] / "test-output" / "ui"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser():
    selenium = pytest.importorskip("selenium", reason="pip install selenium (drives Debian's chromium)")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed: apt-get install -y chromium chromium-driver"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-extensions",
        "--disable-sync",
        "--no-first-run",
        "--metrics-recording-only",
        "--window-size=1600,1100",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    del selenium


def _wait_text(driver, *needles: str, timeout: float = 60) -> str:
    deadline = time.time() + timeout
    text = ""
    while time.time() < deadline:
        try:
            text = driver.find_element("tag name", "body").text
        except Exception:  # noqa: BLE001 - the SPA is re-rendering
            text = ""
        if all(n in text for n in needles):
            return text
        time.sleep(0.5)
    raise AssertionError(f"{needles} not all on {driver.current_url} after {timeout:.0f} s; page text: {text[:1500]!r}")


def _click_text(driver, label: str) -> None:
    """Click the innermost visible element whose whole text is ``label`` (the SPA's tabs are divs)."""
    clicked = driver.execute_script(
        """
        const label = arguments[0];
        const els = [...document.querySelectorAll('body *')].filter(
            e => e.innerText && e.innerText.trim() === label && e.offsetParent !== null);
        if (!els.length) return false;
        els[els.length - 1].click();
        return true;""",
        label,
    )
    assert clicked, f"no visible {label!r} on {driver.current_url}"


def _shot(driver, name: str) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    p = OUT / f"{name}.png"
    time.sleep(1.0)  # let charts and fonts settle
    driver.save_screenshot(str(p))
    assert p.stat().st_size > 10_000
    return p


def test_ui_shows_deployments_schedule_trigger_and_training_artifacts(prefect_server, browser, tmp_path):
    from deployments.apply import deploy_all
    from flows.drift_check import drift_check
    from flows.training import training
    from tasks.settings import load_settings

    settings = load_settings(
        profile="smoke",
        environ={},
        overrides={
            "tuning.enabled": False,
            "federated.enabled": False,
            "adversarial.enabled": False,
            "training.epochs": 3,
            "store.uri": str(tmp_path / "store"),
            "drift.batches_uri": str(tmp_path / "batches"),
        },
    )
    (tmp_path / "batches").mkdir()  # a drift.batches_uri that does not exist is an error
    with using_server(prefect_server.api_url):
        deps = {d["name"]: d for d in deploy_all(settings)}
        state = training(settings, return_state=True)
        assert state.is_completed(), state
        train_run_id = state.state_details.flow_run_id
        dstate = drift_check(settings, return_state=True)
        assert dstate.is_completed(), dstate

    ui = prefect_server.ui_url
    browser.get(f"{ui}/deployments")
    _wait_text(browser, "training", "drift-check", "retraining")
    _shot(browser, "01-deployments")

    browser.get(f"{ui}/deployments/deployment/{deps['drift-check/drift-check']['id']}")
    _wait_text(browser, "drift-check", "Every 15 minutes")
    _shot(browser, "02-drift-check-schedule")

    browser.get(f"{ui}/deployments/deployment/{deps['retraining/retraining']['id']}")
    _wait_text(browser, "retraining", "Triggers")
    _wait_text(browser, "driftloop: retrain")
    _shot(browser, "03-retraining-trigger")

    browser.get(f"{ui}/runs/flow-run/{train_run_id}?tab=Artifacts")
    _wait_text(browser, "Artifacts")
    if "training-metrics" not in browser.find_element("tag name", "body").text:
        _click_text(browser, "Artifacts")
    _wait_text(browser, "training-metrics", "training-learning-curve")
    _shot(browser, "04-training-run-artifacts")

    with using_server(prefect_server.api_url):
        ids = _artifact_ids(train_run_id)
    browser.get(f"{ui}/artifacts/artifact/{ids['training-metrics']}")
    _wait_text(browser, "test_accuracy", "candidate")
    _shot(browser, "05-training-metrics-table")

    browser.get(f"{ui}/artifacts/artifact/{ids['training-learning-curve-md']}")
    _wait_text(browser, "training-learning-curve")
    assert browser.execute_script(  # the plot is really drawn: an <img> with a data: PNG that loaded
        "return [...document.images].some(i => i.src.startsWith('data:image/png') && i.naturalWidth > 100)"
    )
    _shot(browser, "06-learning-curve-plot")


def _artifact_ids(flow_run_id) -> dict[str, str]:
    """Artifact key -> id for every artifact of the flow run and its task runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as c:
        arts = c.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: str(a.id) for a in arts if a.key}
