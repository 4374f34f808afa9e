"""One error type for requests a user can get wrong; its message is a single readable line."""


class SnnetError(ValueError):
    """A bad request (unknown family, impossible stitch id, unusable file, ...)."""
