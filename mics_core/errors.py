"""The one base of every refusal the library hands back to a person.

Each module names its own (AuthError, JobError, ReviewError, ...); all derive from
`RequestRefused`, so the command line and the screens catch that one class and show the
message, which says what to change, instead of each call site listing the errors it knows.
"""

from __future__ import annotations


class RequestRefused(ValueError):
    """A request that cannot be carried out as asked; the message, meant for the user, says why."""
