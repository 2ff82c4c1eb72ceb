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
    keys = [
        "hyperband-plan",
        "tuning-brackets",
        "tuning-trials",
        "tuning-best-config",
        "tuning-learning-curves",
        "tuning-learning-curves-md",
        "tuning-summary",
    ]
    with get_client(sync_client=True) as client:
        found = {
            a.key: a for a in client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
        }
    assert set(keys) <= set(found)
    assert found["tuning-brackets"].type == "table" and "promoted" in str(found["tuning-brackets"].data)
    assert "data:image/png;base64," in str(found["tuning-summary"].data)


@pytest.mark.integration
def test_progress_artifact_is_created_and_updated(prefect_api):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from tasks.tuning.progress import StudyProgress
    from tasks.tuning.steps import ProgressArtifact

    def at(finished, best):
        return StudyProgress(
            total=4,
            finished=finished,
            running=4 - finished,
            paused=0,
            stopped_early=finished // 2,
            errored=0,
            epochs=3 * finished,
            best=best,
            metric="val_accuracy",
            elapsed_s=1.0,
        )

    @flow(name="tuning-progress-test")
    def study():
        reporter = ProgressArtifact(key="tuning-progress-test", min_interval_s=60.0)
        for finished, best in ((0, None), (1, 0.5), (1, 0.6), (4, 0.9)):
            reporter(at(finished, best))
        return reporter.artifact_id

    artifact_id = study()
    with get_client(sync_client=True) as client:
        (art,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["tuning-progress-test"]))
        )
    assert art.id == artifact_id and art.type == "progress"
    assert float(art.data) == 100.0  # updated to the last report: 4/4 finished
    assert "4/4 trials finished (2 stopped early)" in art.description and "0.9000" in art.description
