"""Server-Sent Events (the subset the service sends: `event:` and `data:` fields, comments)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any


def parse_events(lines: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """(event name, decoded JSON data) for each event in a text/event-stream's lines."""
    name, data = "message", []
    for line in lines:
        if not line:  # a blank line ends an event
            if data:
                yield name, json.loads("\n".join(data))
            name, data = "message", []
        elif line.startswith(":"):  # a comment: the server's keep-alive
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
