"""Share links (Gradio's deep links) that hold the page as it is shown.

Gradio 6 writes a deep link from the session's copy of the page's config, which its events keep up
to date as values go in and out. An update (``gr.update``, ``gr.skip()``, a returned component)
makes that copy drift from the page in two ways: the session's component is replaced by a new
instance with a new id, so every later value is written under an id the page does not have (a link
then restores that component empty, or nothing at all); and the replacement's config is built from
its constructor, so the value on the page is dropped (a result revealed by a visibility update came
back as an empty box). ``install`` keeps both right: a replacement stands under the id it replaces,
and an update that carries no value keeps the value shown, as the page itself does.
"""

from __future__ import annotations

import logging

from gradio.blocks import Block
from gradio.components import State
from gradio.state_holder import SessionState

_ORIGINAL = "_videolisa_original"
_PATCHED = ("__setitem__", "_update_config")
log = logging.getLogger(__name__)


def _shown_value(session: SessionState, key: int):
    """The value the session's config holds for a component, and whether it holds one."""
    props = session.config_values.get(key, {}).get("props", {})
    return props.get("value"), "value" in props


def _keeping_the_page(method, *, replaces: bool):
    def wrapper(self: SessionState, key: int, *args):
        if isinstance(self.blocks_config.blocks.get(key), State):
            return method(self, key, *args)
        if replaces and isinstance(args[0], Block):
            args[0]._id = key
        value, shown = _shown_value(self, key)
        method(self, key, *args)
        if shown:
            self._update_value_in_config(key, value)

    setattr(wrapper, _ORIGINAL, method)
    return wrapper


def install() -> None:
    """Make every session's saved page follow the page through updates (once per process).

    These are Gradio's private methods: a Gradio without them keeps its own behaviour (links restore less),
    rather than the page failing to start.
    """
    if hasattr(SessionState.__setitem__, _ORIGINAL):
        return
    if not all(hasattr(SessionState, name) for name in _PATCHED + ("_update_value_in_config",)):
        log.warning("This Gradio's session state has no %s: share links restore only what Gradio saves itself",
                    ", ".join(_PATCHED))
        return
    SessionState.__setitem__ = _keeping_the_page(SessionState.__setitem__, replaces=True)
    SessionState._update_config = _keeping_the_page(SessionState._update_config, replaces=False)
