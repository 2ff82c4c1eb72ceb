"""The central baseline a federated run is judged against: the same model and training settings
trained centrally on the same training split (``tasks.models.trained.train_candidate``), its test
accuracy drawn as a line in the federated round plot (``federated.central_baseline``)."""

from __future__ import annotations


def central_test_accuracy(settings, splits) -> float:
    """Test accuracy of the configured model trained centrally on ``splits.train``."""
    from tasks.models.trained import evaluate_candidate, num_classes_of, train_candidate

    k = num_classes_of(splits.train.y, splits.val.y, splits.test.y)
    model = train_candidate(
        splits.train.x, splits.train.y, splits.val.x, splits.val.y, settings.model, settings.training, settings.seed, k
    )
    return float(evaluate_candidate(model, splits.test.x, splits.test.y, settings.training.device).accuracy)
