class UsageError(Exception):
    """Something the user must fix or decide (bad config, unreachable host, failed run).

    `python -m deploy` prints it as one line on stderr and exits with code 2, never a
    traceback. The message says what happened and what to do next.
    """
