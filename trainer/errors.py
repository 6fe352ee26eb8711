class UsageError(Exception):
    """A mistake the user must fix (bad path, bad config, bad flag).

    The CLI turns it into a one-line message on stderr and exit code 2,
    never a traceback.
    """
