"""Real little videos for tests, encoded with PyAV (extra ``video``).

``make_video(seconds=2)`` returns the bytes of an MP4 whose frames are solid colours that change
every second (red, green, blue, …) with a frame counter drawn in, so a test can tell which part
of the video a sampled frame came from. ``audio=True`` adds a quiet sine sound track.
"""

from __future__ import annotations

import array
import io
import math
from fractions import Fraction
from typing import Any

__all__ = ["COLOURS", "make_video"]

#: the colour of second 0, 1, 2 … (cycling)
COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 230, 40), (200, 40, 200), (40, 210, 210)]


def make_video(
    *,
    seconds: float = 2.0,
    fps: float = 10,
    size: tuple[int, int] = (160, 120),
    codec: str = "mpeg4",
    container: str = "mp4",
    gop: int = 12,
    audio: bool = False,
    video: bool = True,
) -> bytes:
    """Encode a test video in memory; see the module docstring (``video=False``: sound only)."""
    import av
    from PIL import Image, ImageDraw

    rate = Fraction(fps).limit_denominator(1000)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        # Any: PyAV's stubs type add_stream() by codec name only in newer releases
        stream: Any = out.add_stream(codec, rate=rate) if video else None
        if stream is not None:
            stream.width, stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.gop_size = gop
        sound: Any = out.add_stream("aac", rate=8000) if audio else None
        frames = max(1, round(seconds * fps)) if stream is not None else 0
        for n in range(frames):
            colour = COLOURS[int(n / fps) % len(COLOURS)]
            image = Image.new("RGB", size, colour)
            ImageDraw.Draw(image).text((4, 4), str(n), fill=(255, 255, 255))
            frame = av.VideoFrame.from_image(image)
            out.mux(stream.encode(frame))  # type: ignore[union-attr]
        if stream is not None:
            out.mux(stream.encode())
        if sound is not None:
            chunk = 1024
            for start in range(0, int(seconds * 8000), chunk):
                tone = array.array(
                    "f", (0.1 * math.sin(2 * math.pi * 440 * (start + i) / 8000) for i in range(chunk))
                )
                aframe = av.AudioFrame(format="flt", layout="mono", samples=chunk)
                aframe.planes[0].update(tone.tobytes())
                aframe.sample_rate = 8000
                aframe.pts = start
                out.mux(sound.encode(aframe))
            out.mux(sound.encode())
    return buf.getvalue()
