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
