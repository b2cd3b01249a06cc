"""What a message may attach, and how fast Slack must deliver it. The sizes are OpenAI's own limits on input
images, so that nothing Easel accepts is refused (and billed for the text around it) by OpenAI.

- At most 16 images per message: the GPT image models take at most 16 input images (the SDK's `images.edit`).
- At most 15 MB each: an `input_image`'s `image_url` may hold 20,971,520 characters (the Responses spec), and
  a data URL of 15,000,000 bytes is 20,000,000 characters of base64 plus its prefix.
- At most 36 MB together: 48 MB of base64, inside the 50 MB OpenAI accepts in one request's images.
- At most 40 megapixels each (a 48 MP phone photo is refused; 12 and 24 MP ones are not), which also bounds
  the memory a decoding check takes (160 MB for RGBA); Pillow's own decompression-bomb limit (89 MP, an error
  past 179 MP) stays in place behind it.
"""

from __future__ import annotations

import dataclasses

MAX_IMAGES = 16
MAX_IMAGE_BYTES = 15_000_000
MAX_TOTAL_BYTES = 36_000_000
MAX_PIXELS = 40_000_000
FORMATS = ("PNG", "JPEG", "WEBP", "GIF")  # what OpenAI takes as input images (a GIF only if not animated)


@dataclasses.dataclass(frozen=True)
class Pace:
    """How fast a download must go. Slack's file servers send megabytes a second; these only stop a sender
    that holds Easel up (a connection trickling a byte a second would otherwise take minutes)."""

    min_rate: float = 64 * 1024  # bytes per second on average, counted from `grace` seconds in
    grace: float = 3.0
    read_gap: float = 15.0  # seconds without a byte
    deadline: float = 120.0  # seconds for one file, whatever its pace
    total: float = 300.0  # seconds for all of one message's files


PACE = Pace()


def mb(n: int) -> str:
    return f"{n / 1_000_000:g} MB"
