"""Gradio's refusal of an over-size upload, in our words.

The page and ``gradio_client`` check a file's size before sending it (their messages name the
limit). A raw HTTP upload past ``max_file_size`` is refused by the server with status 413 and a
text that says nothing about what to do; this middleware replaces that text with our sentence.
"""

from __future__ import annotations

from starlette.middleware import Middleware


def too_large_message(limit_bytes: float) -> str:
    return (f"The file is larger than the {limit_bytes / 2**20:g} MB this demo accepts: trim or compress the video "
            "and try again.")


class UploadLimitMessage:
    """ASGI middleware: a 413 answer of Gradio's upload route gets our sentence as its body."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].endswith("/upload"):
            await self.app(scope, receive, send)
            return
        replaced = False

        async def send_in_our_words(message):
            nonlocal replaced
            if replaced:
                return  # Gradio's own body: dropped
            if message["type"] == "http.response.start" and message["status"] == 413:
                replaced = True
                limit = scope["app"].get_blocks().max_file_size
                body = too_large_message(limit).encode()
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in
                           (b"content-length", b"content-type")]
                headers += [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]
                await send({**message, "headers": headers})
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            await send(message)

        await self.app(scope, receive, send_in_our_words)


def middleware() -> list[Middleware]:
    """What ``launch(app_kwargs={"middleware": ...})`` needs."""
    return [Middleware(UploadLimitMessage)]
