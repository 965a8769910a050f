"""The one base class of every error a user can cause (bad config, data, checkpoint or argument).

The command line prints a :class:`UserError` as one line naming the problem and the fix and exits
with code 2; anything else is a bug and keeps its traceback. Library modules import it from here,
never from the CLI module.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""
