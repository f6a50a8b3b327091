"""One exception type for everything a user can get wrong."""


class UserError(Exception):
    """Bad input (flags, data, checkpoint, fault plan): reported as one line, exit status 2."""
