"""The errors of deploying and serving (no Prefect import, so the CLI can name them cheaply)."""

from tasks.errors import DriftloopError


class DeploymentError(DriftloopError):
    """There is no Prefect server to deploy to or serve from (names the URL and what to run)."""


class DeploymentApplyError(DriftloopError):
    """The server refused a deployment (names the deployment and the server's reason)."""
