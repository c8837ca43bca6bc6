"""Videos in a provider request: sent whole, as sampled frames, or as a note.

The reply path calls :func:`expand_videos` once on the context before images are prepared.
For each :class:`~relaybot.core.contracts.models.VideoPart` in a user turn:

* a provider whose :attr:`ProviderCapabilities.video <relaybot.core.contracts.provider.ProviderCapabilities>`
  is true (Gemini) gets the video itself, as a ``data:`` URL (``inline_data`` on the wire),
  sound included — unless the video is so long that it would take more than half the model's
  context window (≈ :data:`NATIVE_TOKENS_PER_SECOND` tokens a second), then it gets frames;
* a vision model gets ``[video] frames`` (:attr:`VideoConfig.frames
  <relaybot.core.cli.config.VideoConfig>`, evenly spaced, each preceded by its time in the video)
  as images; they are stored in the media store, so the image path prepares them for the
  provider like any picture, and a small manifest beside the video keeps later turns from
  decoding it again. The sound track is not used: no transcription provider exists yet, and
  the user is told so;
* a model that sees neither gets a text marker, and the user a note.

Decoding runs in a worker thread, at most :data:`MAX_PARALLEL_DECODES` at a time per process,
within ``[video] decode_seconds`` (see :mod:`relaybot.core.modelio.video`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relaybot.core.contracts.models import (
    ChatMessage,
    ContentPart,
    ImagePart,
    ImageRef,
    Role,
    TextPart,
    VideoPart,
    VideoRef,
)
from relaybot.core.modelio.media import MediaError

if TYPE_CHECKING:
    from relaybot.core.cli.config import VideoConfig
    from relaybot.core.contracts.provider import ProviderCapabilities
    from relaybot.core.modelio.media import MediaStore
    from relaybot.core.modelio.video import VideoSample

__all__ = ["AUDIO_NOTE", "expand_videos", "sampled_frames"]

log = logging.getLogger("relaybot.video")

#: Gemini's documented cost of video input at default resolution (frames and sound)
NATIVE_TOKENS_PER_SECOND = 300
#: decodes running at once in this process (each is one CPU-bound thread)
MAX_PARALLEL_DECODES = 2
_decodes = threading.BoundedSemaphore(MAX_PARALLEL_DECODES)
#: bump when sampling changes, so manifests written by the old code are ignored
_MANIFEST_VERSION = 1

AUDIO_NOTE = (
    "(I looked at the video's pictures only: its sound was not used, because no transcription "
    "provider is configured.)"
)
NO_VIDEO_MARKER = "[a video was attached here, but this model cannot see images or video]"
NO_VIDEO_NOTE = "(This model cannot see images or videos, so I answered from the text only.)"


def clock(seconds: float) -> str:
    """``83.25`` → ``1:23.2`` (``h:mm:ss.s`` past an hour)."""
    minutes, secs = divmod(max(0.0, seconds), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes}:{secs:04.1f}"


async def expand_videos(
    messages: list[ChatMessage], media: MediaStore, caps: ProviderCapabilities, settings: VideoConfig
) -> list[str]:
    """Replace the videos in ``messages`` (in place) by what the provider can take; return the
    notes to show the user (each once). See the module docstring."""
    notes: list[str] = []

    def note(text: str) -> None:
        if text not in notes:
            notes.append(text)

    for message in messages:
        if not any(isinstance(p, VideoPart) for p in message.parts):
            continue
        parts: list[ContentPart] = []
        for part in message.parts:
            if not isinstance(part, VideoPart):
                parts.append(part)
                continue
            video = part.video
            if message.role != Role.USER:
                parts.append(TextPart("[video] "))  # chat APIs take media in user turns only
            elif caps.video and _fits_natively(video, caps):
                try:
                    data = await media.load(video)
                except MediaError as exc:
                    parts.append(TextPart(f"[video unavailable: {exc.user_message}]"))
                    note(f"(A video could not be sent to the model: {exc.user_message})")
                    continue
                url = f"data:{video.mime_type};base64,{base64.b64encode(data).decode('ascii')}"
                parts.append(VideoPart(replace(video, uri=url)))
            elif caps.vision:
                try:
                    header, frames, complete = await sampled_frames(media, video, settings)
                except MediaError as exc:
                    log.warning("video %s left out of the request: %s", video.uri[:18], exc)
                    parts.append(TextPart(f"[video unavailable: {exc.user_message}]"))
                    note(f"(A video could not be sent to the model: {exc.user_message})")
                    continue
                parts.append(TextPart(header))
                for when, ref in frames:
                    parts.append(TextPart(f"[frame at {clock(when)}]"))
                    parts.append(ImagePart(ref))
                if video.has_audio:
                    note(AUDIO_NOTE)
                if not complete:
                    note("(Part of the video could not be read, so I only saw the frames I could decode.)")
            else:
                parts.append(TextPart(NO_VIDEO_MARKER))
                note(NO_VIDEO_NOTE)
        message.parts = parts
    return notes


def _fits_natively(video: VideoRef, caps: ProviderCapabilities) -> bool:
    if video.duration is None:
        return True
    return video.duration * NATIVE_TOKENS_PER_SECOND <= caps.context_window // 2


async def sampled_frames(
    media: MediaStore, video: VideoRef, settings: VideoConfig
) -> tuple[str, list[tuple[float, ImageRef]], bool]:
    """``(header text, [(time, frame image)], complete)`` for a stored video, decoding it at most
    once per ``[video]`` setting (a manifest beside the video remembers the frames). Raises
    MediaError (missing file, unreadable video, PyAV not installed)."""
    path = media.path_of(video)
    manifest = path.with_name(f"{path.name}.frames-{settings.frames}-{settings.frame_edge}.json")
    cached = await asyncio.to_thread(_read_manifest, manifest, media)
    if cached is None:
        data = await media.load(video)
        sample = await asyncio.to_thread(_sample, data, settings)
        frames = []
        for frame in sample.frames:
            ref = await media.save(frame.data, mime_type="image/jpeg")
            frames.append((frame.time, ref))
        cached = (frames, sample.complete)
        try:
            await asyncio.to_thread(_write_manifest, manifest, frames, sample.complete)
        except OSError:
            pass  # costs a decode next turn, not the reply
    frames, complete = cached
    length = f"{video.duration:.1f} s" if video.duration else "unknown length"
    header = f"[video, {length}: {len(frames)} frames sampled evenly, each after its time]"
    return header, frames, complete


def _sample(data: bytes, settings: VideoConfig) -> VideoSample:
    from relaybot.core.modelio.video import sample_frames

    with _decodes:  # bounded CPU: a burst of videos queues instead of using every core
        return sample_frames(
            data, settings.frames, edge=settings.frame_edge, budget_seconds=settings.decode_seconds
        )


def _read_manifest(path: Path, media: MediaStore) -> tuple[list[tuple[float, ImageRef]], bool] | None:
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
        if raw.get("version") != _MANIFEST_VERSION:
            return None
        frames = [
            (float(f["time"]), ImageRef(f["uri"], "image/jpeg", f["width"], f["height"], f["size_bytes"]))
            for f in raw["frames"]
        ]
        if not frames or not all(media.path_of(ref).exists() for _, ref in frames):
            return None  # a frame was swept (retention): sample again
        return frames, bool(raw["complete"])
    except (OSError, ValueError, KeyError, TypeError, MediaError):
        return None


def _write_manifest(path: Path, frames: list[tuple[float, ImageRef]], complete: bool) -> None:
    data = {
        "version": _MANIFEST_VERSION,
        "complete": complete,
        "frames": [
            {"time": t, "uri": r.uri, "width": r.width, "height": r.height, "size_bytes": r.size_bytes}
            for t, r in frames
        ],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)
