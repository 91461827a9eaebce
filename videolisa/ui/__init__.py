"""The Gradio page and its serving glue (the only part of the library that imports gradio)."""
