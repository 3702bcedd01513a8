"""Errors the pipeline raises for problems a user can fix."""


class DatasetError(ValueError):
    """The uploaded dataset is unusable. The message says what is wrong and where.

    `entry` names the offending zip entry (or class) when there is one; `rule` is a short
    machine-readable name for the check that failed (e.g. "not_a_zip", "too_few_classes").
    """

    def __init__(self, message: str, *, rule: str, entry: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.entry = entry
