"""Errors a user can act on. The CLI prints these as one line and exits non-zero (no traceback)."""


class IQEtlError(Exception):
    """Base class for errors caused by input, configuration or the environment, not by a bug."""


class SettingsError(IQEtlError):
    """A configuration value is malformed. The message names the variable."""


class WarehouseError(IQEtlError):
    """The warehouse could not be reached or used."""


class WarehouseBusy(WarehouseError):
    """The embedded warehouse folder is locked by another process."""


class SourceError(IQEtlError):
    """Chain data could not be read: names the input and the position (file, offset, slot, method)."""


class SourceMissing(SourceError):
    """The input is not there (an archive answering 404/410, no such file, an epoch not published):
    retrying will not bring it; callers tell it apart by type, never by the message's words."""


class DeliveryFailed(IQEtlError):
    """An export delivered less than it should (failed or refused uploads). Carries the run's result,
    so a flow run can fail with a message and still hand its figures to the caller."""

    def __init__(self, message: str, result: object = None):
        super().__init__(message)
        self.result = result
