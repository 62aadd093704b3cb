"""Errors a user can cause. The CLI prints each as one line and exits with status 2."""


class CompactnasError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""


class ArchStringError(CompactnasError, ValueError):
    """A malformed architecture string; the message names the bad token."""


class ConfigError(CompactnasError, ValueError):
    """A bad configuration value, flag or file."""


class DataError(CompactnasError):
    """Missing or malformed data."""


class RegistryError(CompactnasError, KeyError):
    """An unknown name in a registry (space, device, evaluator, sampler, objective)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TrialDiverged(RuntimeError):
    """Training produced a non-finite loss; the trial is recorded as failed."""


class CheckpointError(CompactnasError):
    """A checkpoint that cannot be used: missing, not a checkpoint, or made for another model or data."""
