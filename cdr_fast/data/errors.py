"""The one error every loader raises: a dataset file is missing, truncated or corrupt."""


class DatasetError(ValueError):
    """A dataset file is missing, truncated or corrupt (the message names it)."""
