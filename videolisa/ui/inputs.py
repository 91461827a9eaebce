"""Input components that refuse bad API values in our words.

Gradio checks a slider's range and a radio's choices itself, in generic wording that names no
setting ("Value -1 is less than minimum value 4."); a value that is not a number, or a file Pillow
cannot open in an image input, ends as "the upstream app raised an exception". These builders
return Gradio's own components with their ``preprocess`` wrapped on the instance: a subclass would
do the same, but Gradio's component metaclass writes a ``.pyi`` stub beside every subclass's source.
(An event that updated these components with ``gr.update`` would give that session a fresh instance,
without the wrapper; no event of the page does.)
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import gradio as gr
from PIL import Image, UnidentifiedImageError

ERROR_TITLE = "VideoLISA could not run"


def _check_first(component, check: Callable[[Any], Any]):
    own = component.preprocess
    component.preprocess = lambda payload: own(check(payload))
    return component


def setting(minimum: float, maximum: float, **kwargs) -> gr.Slider:
    """A slider; through the API, a value outside its range or not a number is refused with the setting's name."""
    slider = gr.Slider(minimum, maximum, **kwargs)

    def check(payload: Any) -> float:
        try:
            value = float(payload)
        except (TypeError, ValueError, OverflowError):
            value = math.nan
        if not minimum <= value <= maximum:  # NaN fails too
            raise gr.Error(f"“{slider.label}” must be a number from {minimum:g} to {maximum:g}; got {payload!r}.",
                           title=ERROR_TITLE)
        return value

    return _check_first(slider, check)


def choice(choices, **kwargs) -> gr.Radio:
    """Radio buttons; through the API, a value that is not one of the choices is refused with the choices."""
    radio = gr.Radio(choices, **kwargs)

    def check(payload: Any) -> Any:
        values = [value for _, value in radio.choices]
        if payload not in values:
            raise gr.Error(f"“{radio.label}” must be one of {', '.join(map(repr, values))}; got {payload!r}.",
                           title=ERROR_TITLE)
        return payload

    return _check_first(radio, check)


def image_input(**kwargs) -> gr.Image:
    """An image upload passed on as a file path, whatever the file turns out to be.

    Gradio opens the upload with Pillow first, and a video, a damaged file or a decompression bomb
    would fail there without a word. Here anything Pillow cannot open goes to the app's own reader,
    which checks the limits from the header: a video is segmented as a video, anything else is
    refused with the reader's own sentence.
    """
    image = gr.Image(type="filepath", **kwargs)
    own = image.preprocess

    def preprocess(payload) -> Optional[str]:
        try:
            return own(payload)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError):
            return str(payload.path)

    image.preprocess = preprocess
    return image
