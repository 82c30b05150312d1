"""Errors a user can fix. The CLI prints their message (no traceback) and exits with 2."""


class TailormlError(ValueError):
    """Bad input: the message names the file, field or option and how to fix it."""


class ConfigError(TailormlError):
    """A config file or option is wrong."""


class CohortError(TailormlError):
    """A cohort file is missing, unreadable or breaks the schema."""


class ModelFileError(TailormlError):
    """A model file is missing, unreadable, or lacks what a saved model must carry."""


class DeployError(TailormlError):
    """A model cannot go to the target as asked (an unsupported layer or input, a budget)."""


class NotFoundError(TailormlError):
    """What was asked for does not exist (the service answers 404)."""


class SimulationError(TailormlError):
    """A simulation cannot go on (the model left its range); names the patient and minute."""
