"""The one base of every refusal the library hands back to a person, and how long a value it echoes may be.

Each module names its own (AuthError, JobError, ReviewError, ...); all derive from
`RequestRefused`, so the command line and the screens catch that one class and show the
message, which says what to change, instead of each call site listing the errors it knows.
"""

from __future__ import annotations


class RequestRefused(ValueError):
    """A request that cannot be carried out as asked; the message, meant for the user, says why."""


# What is echoed or stored of one value (a case id, a file name) and of one reason: the input can
# be megabytes (a 5 MB case id); the terminal, the report and the database row need not be.
ECHO_CHARS = 80
REASON_CHARS = 300


def short(text: str, limit: int = ECHO_CHARS) -> str:
    """`text` cut to `limit` characters, marked with "…" (and its length) when it was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"
