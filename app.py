"""VideoLISA demo: the Hugging Face Space entry (`python app.py`, or `python app.py --tiny` for a UI preview).

The model is named by the environment: VIDEOLISA_MODEL (hub id or directory, default the released
checkpoint; "tiny" writes a tiny random one), VIDEOLISA_VISION_TOWER and VIDEOLISA_SAM2. Gradio's
GRADIO_SERVER_NAME / GRADIO_SERVER_PORT pick the address.
"""

# `spaces` must come before anything initialises CUDA (ZeroGPU emulates it until a GPU is lent).
try:
    import spaces  # noqa: F401
except ImportError:  # off Spaces the GPU decorator is a no-op anyway
    pass

import argparse
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
ASSETS = HERE / "assets"
EXAMPLES = HERE / "examples"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="run on a tiny random checkpoint (a UI preview)")
    if parser.parse_args().tiny:
        os.environ["VIDEOLISA_MODEL"] = "tiny"

from videolisa.settings import env_number  # noqa: E402
from videolisa.ui import page, serving  # noqa: E402

serving.engine()  # load the model (and move it to the GPU) once, at import time, as ZeroGPU requires
demo = page.build_demo(ASSETS, EXAMPLES)
demo.queue(max_size=env_number("VIDEOLISA_QUEUE_SIZE", page.MAX_QUEUE, minimum=1), default_concurrency_limit=1)
LAUNCH_OPTIONS = page.launch_options(ASSETS)

if __name__ == "__main__":
    demo.launch(**LAUNCH_OPTIONS)
