"""The one base class of every error vqa-pipe raises on purpose.

A :class:`VqaPipeError` is a user-facing failure: its message says which file, video, option
or store is wrong and what to do. The command line prints it as one line; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class VqaPipeError(Exception):
    """A failure the user can act on; the message names the item and the fix."""
