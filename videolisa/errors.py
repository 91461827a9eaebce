"""The library's errors. Each message is a sentence a person can act on; the app shows it as is."""


def counted(n: int, noun: str) -> str:
    """'1 frame', '3 frames': a count for a message."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def amount(value: float, decimals: int = 1) -> str:
    """A measure for a message, to ``decimals`` places or more where that would read as zero (0.004, not 0.0)."""
    while value and not float(f"{value:.{decimals}f}") and decimals < 12:
        decimals += 1
    return f"{value:.{decimals}f}"


def over_limit(value: float, limit: float, decimals: int = 1) -> tuple[str, str]:
    """A measure and the limit it exceeds, to as many places as it takes for them to read differently
    (200.3 MB and 200.0 MB, not 200 MB and 200 MB)."""
    while amount(value, decimals) == amount(limit, decimals) and decimals < 12:
        decimals += 1
    return amount(value, decimals), amount(limit, decimals)


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
