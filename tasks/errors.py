"""The errors driftloop raises on purpose. Each names what was wrong and where (file, key, rule)."""


class DriftloopError(Exception):
    """Base class: an error that is part of driftloop's interface, with a message meant for users."""


class ConfigError(DriftloopError):
    """A configuration file, environment variable or parameter is invalid."""


class DataError(DriftloopError):
    """A dataset or batch cannot be read or has the wrong form (names the file or URI)."""


class ValidationFailed(DriftloopError):
    """A batch violates the schema; ``report`` lists the rules, ``quarantine_uri`` where it went."""

    def __init__(self, message: str, report=None, quarantine_uri: str | None = None):
        super().__init__(message)
        self.report = report
        self.quarantine_uri = quarantine_uri


class StoreError(DriftloopError):
    """The artifact store cannot be reached or refused an operation."""


class PreconditionFailed(StoreError):
    """A conditional write (``if_absent`` / ``if_match``) lost: the object exists or changed. Not
    transient: a retry of the same write loses again; the caller re-reads and decides."""


class ObjectNotFound(StoreError):
    """A key (or the bucket) does not exist in the artifact store."""


class IntegrityError(StoreError):
    """A stored object's bytes do not match the sha256 recorded for it."""


class RegistryError(DriftloopError):
    """A model-registry operation is not possible (unknown model or version, lost race)."""


class RegistryCorrupt(RegistryError):
    """A registry file (champion pointer, version record) cannot be read; the message names it and the repair."""
