"""The library's errors. Each message is a sentence a person can act on; the app shows it as is."""


def counted(n: int, noun: str) -> str:
    """'1 frame', '3 frames': a count for a message."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


class VideoLISAError(Exception):
    """Base class of every error the library raises on purpose."""


class InvalidVideo(VideoLISAError):
    """The input is not a video (or image) we can decode."""


class InputTooLarge(VideoLISAError):
    """The input exceeds a limit that the caller asked us to enforce."""


class InvalidSettings(VideoLISAError):
    """Settings the model cannot take (e.g. T_sparse < T_dense + 1, too many visual tokens)."""


class InvalidPrompt(VideoLISAError):
    """The prompt is empty or too long."""


class InvalidOutput(VideoLISAError):
    """The outputs cannot be written where asked (a file in the way, the input itself, no permission)."""


class ModelUnavailable(VideoLISAError):
    """Weights cannot be found, downloaded or read."""


class CheckpointMismatch(ModelUnavailable):
    """The checkpoint's keys or shapes do not match what the model needs."""
