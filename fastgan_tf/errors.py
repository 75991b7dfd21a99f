class UserError(Exception):
    """A problem the user can fix; the CLIs print its message on one line, no traceback."""
