"""The one error family uldkit raises for problems a user can fix.

The CLI turns any of these into a single readable line and a non-zero exit; anything else
is a bug and keeps its traceback.
"""


class UldkitError(Exception):
    """Base class: a problem with the user's input, files or settings."""


class DataError(UldkitError):
    """A dataset file or record is missing, malformed, or has the wrong fields."""


class ModelError(UldkitError):
    """A model directory is missing, unsafe to load, or does not match what it is used with."""


class ConfigError(UldkitError):
    """A setting is out of range or contradicts another."""


class TrainingError(UldkitError):
    """Training could not go on (for example, the loss became non-finite)."""


class MissingExtraError(UldkitError):
    """An optional feature was asked for whose extra (`pip install "uldkit[NAME]"`) is absent."""
