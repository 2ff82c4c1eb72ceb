"""The tune stage's artifacts under a real Prefect API (no Ray: a hand-made study)."""

import pytest

from tests.tuning.test_report import study


@pytest.mark.integration
def test_publish_study_creates_table_and_image_artifacts(prefect_api):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from tasks.tuning.steps import publish_study

    @flow(name="tuning-artifacts-test")
    def publish():
        return publish_study(study())

    png = publish()
    assert png[:4] == b"\x89PNG"
    keys = ["hyperband-plan", "tuning-brackets", "tuning-trials", "tuning-best-config", "tuning-learning-curves",
            "tuning-learning-curves-md", "tuning-summary"]
    with get_client(sync_client=True) as client:
        found = {a.key: a for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))}
    assert set(keys) <= set(found)
    assert found["tuning-brackets"].type == "table" and "promoted" in str(found["tuning-brackets"].data)
    assert "data:image/png;base64," in str(found["tuning-summary"].data)
