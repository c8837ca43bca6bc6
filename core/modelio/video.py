"""Decoding the videos people send, with PyAV (extra ``video``): checking them, sampling frames.

Everything here is synchronous and CPU-bound; callers run it in a worker thread
(:meth:`MediaStore.save_video <relaybot.core.modelio.media.MediaStore.save_video>`,
:mod:`relaybot.core.modelio.video_parts`). Work is bounded whatever the file claims:

* :func:`probe_video` reads the container's header and decodes frames only until the first
  picture (so a damaged stream is refused when it arrives, not when a model needs it);
* :func:`sample_frames` seeks to ``count`` evenly spaced times and decodes from the keyframe
  before each one, at most :data:`MAX_FRAMES_PER_SEEK` frames per target: a three-hour video
  costs ``count`` short decodes, not three hours of them. A file that cannot seek, or does not
  say how long it is, is decoded in order (at most :data:`MAX_SEQUENTIAL_FRAMES` frames) keeping
  a thinned-out set of candidates. Both stop at a deadline and return what they have.

Only one decoded picture is alive at a time (plus the small JPEG frames kept), so memory stays
within a few megabytes of the file itself.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from relaybot.core.modelio.media import MediaError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["Frame", "VideoInfo", "VideoSample", "probe_video", "sample_frames", "video_support"]

#: after a seek, frames decoded to reach the target time before taking the latest one
MAX_FRAMES_PER_SEEK = 600
#: frames decoded in order when seeking is impossible (about 5 minutes at 30 fps)
MAX_SEQUENTIAL_FRAMES = 9000
#: packets read while looking for the first picture in :func:`probe_video`
MAX_PROBE_PACKETS = 2000
_JPEG_QUALITY = 80

#: the containers accepted, by PyAV/FFmpeg demuxer name → the MIME type sent to providers
_CONTAINERS = {
    "mp4": "video/mp4",
    "mov": "video/mp4",
    "3gp": "video/3gpp",
    "matroska": "video/webm",
    "webm": "video/webm",
    "avi": "video/avi",
    "flv": "video/x-flv",
    "mpeg": "video/mpeg",
    "mpegts": "video/mpeg",
}


def video_support() -> str | None:
    """``None`` when videos can be decoded here, else why not (PyAV missing: which extra)."""
    try:
        import av  # noqa: F401
    except ImportError:
        return "PyAV is not installed: pip install 'relaybot[video]'"
    return None


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What :func:`probe_video` found: the MIME type to send, size, length and sound."""

    mime_type: str
    duration: float | None
    width: int
    height: int
    has_audio: bool


@dataclass(frozen=True, slots=True)
class Frame:
    """One sampled picture: its time in the video (seconds) and JPEG bytes."""

    time: float
    data: bytes
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class VideoSample:
    """The frames :func:`sample_frames` took, oldest first.

    ``complete`` is false when decoding stopped early (damaged or cut-off data, the deadline);
    ``decoded`` counts the pictures decoded to get them (the work done).
    """

    frames: list[Frame]
    duration: float | None
    complete: bool
    decoded: int


def _unreadable() -> MediaError:
    return MediaError(
        "not a readable video",
        user_message="That file is not a video I can read (or it is damaged). Please send an MP4 or WebM.",
    )


def _open(data: bytes) -> Any:
    try:
        import av
    except ImportError:
        raise MediaError(
            "video refused: PyAV is not installed (pip install 'relaybot[video]')",
            user_message="Sorry, this bot is not set up to read videos.",
        ) from None
    try:
        return av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
    except Exception:
        raise _unreadable() from None


def _mime(container: Any) -> str:
    names = str(container.format.name).split(",")
    for name in names:
        if name in _CONTAINERS:
            return _CONTAINERS[name]
    raise MediaError(
        f"unsupported video container {container.format.name!r}",
        user_message="That video format is not supported. Please send an MP4 or WebM video.",
    )


def _duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
        if seconds > 0:
            return seconds
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _start(stream: Any) -> float:
    if stream.start_time is not None and stream.time_base is not None:
        return float(stream.start_time * stream.time_base)
    return 0.0


def probe_video(data: bytes) -> VideoInfo:
    """Check that ``data`` is a video with a decodable picture; raise MediaError otherwise."""
    container = _open(data)
    with container:
        mime = _mime(container)
        if not container.streams.video:
            if not container.streams.audio:
                raise _unreadable()  # nothing at all: a damaged file, not a sound file
            raise MediaError(
                "no video stream",
                user_message="That file has no picture in it (only sound?). Please send a video.",
            )
        stream = container.streams.video[0]
        has_audio = bool(container.streams.audio)
        picture = None
        try:
            for count, packet in enumerate(container.demux(stream)):
                if count >= MAX_PROBE_PACKETS:
                    break
                frames = packet.decode()
                if frames:
                    picture = frames[0]
                    break
        except Exception:
            raise _unreadable() from None
        if picture is None:
            raise _unreadable()
        return VideoInfo(
            mime_type=mime,
            duration=_duration(container, stream),
            width=int(picture.width),
            height=int(picture.height),
            has_audio=has_audio,
        )


def _jpeg(picture: Any, edge: int) -> tuple[bytes, int, int]:
    image: PILImage = picture.to_image()
    image.thumbnail((edge, edge))
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=_JPEG_QUALITY)
    return buf.getvalue(), image.width, image.height


def sample_frames(data: bytes, count: int, *, edge: int = 768, budget_seconds: float = 20.0) -> VideoSample:
    """``count`` frames spread evenly over the video (each at the middle of its slice), as JPEGs
    no larger than ``edge`` pixels; see the module docstring for the bounds. Raises MediaError
    when not a single frame can be decoded."""
    if count < 1:
        raise ValueError("count must be at least 1")
    deadline = time.monotonic() + budget_seconds
    container = _open(data)
    with container:
        if not container.streams.video:
            raise _unreadable()
        stream = container.streams.video[0]
        duration = _duration(container, stream)
        sample: VideoSample | None = None
        if duration is not None:
            sample = _by_seeking(container, stream, duration, count, edge, deadline)
        if sample is None or not sample.frames:
            sample = _in_order(container, stream, duration, count, edge, deadline)
    if not sample.frames:
        raise _unreadable()
    return sample


def _by_seeking(
    container: Any, stream: Any, duration: float, count: int, edge: int, deadline: float
) -> VideoSample | None:
    """One seek per target time; ``None`` when the file cannot seek at all."""
    start = _start(stream)
    rate = stream.average_rate or stream.guessed_rate
    frame_gap = float(1 / rate) if rate else 1.0
    frames: list[Frame] = []
    decoded = 0
    complete = True
    for i in range(count):
        if time.monotonic() > deadline:
            complete = False
            break
        target = duration * (i + 0.5) / count
        try:
            container.seek(int((start + target) / stream.time_base), stream=stream, backward=True)
        except Exception:
            if not frames:
                return None
            complete = False
            break
        best = None
        reached = False
        try:
            for n, picture in enumerate(container.decode(stream)):
                decoded += 1
                if picture.time is None or picture.time - start >= target:
                    reached = True
                    # the frame nearest the target: this one or the one before it
                    if best is None or best.time is None or picture.time is None or (
                        picture.time - start - target <= target - (best.time - start)
                    ):
                        best = picture
                    break
                best = picture
                if n >= MAX_FRAMES_PER_SEEK:
                    reached = True
                    break
                if time.monotonic() > deadline:
                    complete = False
                    break
        except Exception:  # damaged or cut-off data from here on
            complete = False
        if best is None:  # nothing decodes from here on (cut off)
            complete = False
            continue
        when = (best.time - start) if best.time is not None else target
        if not reached and when < target - frame_gap:
            complete = False  # the pictures end before the time the header promised: cut off
        if frames and when <= frames[-1].time:
            continue  # fewer frames than targets, or a sparse keyframe: the same frame again
        jpeg, width, height = _jpeg(best, edge)
        frames.append(Frame(round(when, 3), jpeg, width, height))
    return VideoSample(frames, duration, complete, decoded)


def _in_order(
    container: Any, stream: Any, duration: float | None, count: int, edge: int, deadline: float
) -> VideoSample:
    """Decode from the start, keeping every ``stride``-th frame; the stride doubles whenever
    the candidates fill up, so they stay spread over everything decoded so far."""
    try:
        container.seek(0)
    except Exception:
        pass
    start = _start(stream)
    keep = max(4 * count, count)
    candidates: list[Frame] = []
    stride = 1
    decoded = 0
    complete = True
    try:
        for picture in container.decode(stream):
            if decoded % stride == 0:
                jpeg, width, height = _jpeg(picture, edge)
                when = (picture.time - start) if picture.time is not None else float(decoded)
                candidates.append(Frame(round(when, 3), jpeg, width, height))
                if len(candidates) >= keep:
                    candidates = candidates[::2]
                    stride *= 2
            decoded += 1
            if decoded >= MAX_SEQUENTIAL_FRAMES or time.monotonic() > deadline:
                complete = False
                break
    except Exception:
        complete = False
    if len(candidates) > count:
        step = len(candidates) / count
        candidates = [candidates[int(step * (i + 0.5))] for i in range(count)]
    return VideoSample(candidates, duration, complete, decoded)
