"""Errors the pipeline raises for problems a user can fix."""


class DatasetError(ValueError):
    """The uploaded dataset is unusable. The message says what is wrong and where.

    `entry` names the offending zip entry (or class) when there is one, escaped with
    `escape_name` so control characters are visible; `rule` is a short machine-readable name
    for the check that failed (e.g. "not_a_zip", "too_few_classes", "path_traversal").
    `str(error)` is the message followed by the rule in brackets, so a job's stored error
    names the rule too.
    """

    def __init__(self, message: str, *, rule: str, entry: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule
        self.entry = escape_name(entry) if entry is not None else None

    def __str__(self) -> str:
        return f"{self.message} [rule: {self.rule}]"


def escape_name(name: str) -> str:
    """A name as repr() would show it, without the quotes: NUL, newlines, bidi overrides and
    other unprintable characters become escapes; backslashes are doubled; plain names are
    unchanged."""
    return "".join(_escape_char(ch) for ch in name)


def _escape_char(ch: str) -> str:
    if ch == "\\":
        return "\\\\"
    if ch.isprintable():
        return ch
    return repr(ch)[1:-1]
