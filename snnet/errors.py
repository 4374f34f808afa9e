"""One error type for requests a user can get wrong; its message is a single readable line."""


class SnnetError(ValueError):
    """A bad request (unknown family, impossible stitch id, unusable file, ...)."""


def out_of_memory(error: BaseException) -> bool:
    """Whether an error means memory ran out: torch's CUDA error, its CPU allocator's, or Python's."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error).lower()
    return "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text
