"""Images and videos people send (and images the bot generates), stored by content hash.

Connectors hand raw bytes to :meth:`MediaStore.save`, which checks that they are a real,
reasonably sized image (pillow, off the event loop) and stores them once under their SHA-256.
Messages then refer to them as ``media:<sha256>`` (:class:`~relaybot.core.models.ImageRef`), so
the database holds references, not blobs, and providers load bytes only when they need them.

Refusals raise :class:`MediaError`, whose ``user_message`` says what was wrong in words a person
can act on (too big, not an image, damaged).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import re
import warnings
from pathlib import Path

from .errors import RelaybotError
from .models import ImageRef, VideoRef

#: platforms let bots download up to 20 MB; we refuse anything larger before decoding it
MAX_IMAGE_BYTES = 20 * 1024 * 1024
#: images with more pixels than this are refused (decompression-bomb guard; ~ 12,000 × 8,000)
MAX_PIXELS = 100_000_000

_SHA = re.compile(r"^[0-9a-f]{64}$")
_FORMAT_MIME = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "MPO": "image/jpeg",
}
_EXT = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/bmp": "bmp",
    "image/tiff": "tiff",
}


class MediaError(RelaybotError):
    """An image was refused or could not be found; ``user_message`` explains why."""

    def __init__(self, message: str, *, user_message: str | None = None) -> None:
        super().__init__(message, user_message=user_message or message)


def _inspect(data: bytes) -> tuple[str, int, int]:
    """Validate image bytes fully (decode, not just the header); return (mime, width, height)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or ""
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise Image.DecompressionBombError("too many pixels")
                img.load()  # decodes everything: truncated files fail here, not later
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MediaError(
            "image refused: its pixel dimensions are absurdly large (possible decompression bomb)",
            user_message="That image is far too large in pixels. Please send a smaller one.",
        ) from None
    except Exception as exc:
        raise MediaError(
            f"not a readable image: {type(exc).__name__}",
            user_message="That file is not an image I can read (or it is damaged). "
            "Please send a JPEG, PNG, GIF or WebP picture.",
        ) from None
    mime = _FORMAT_MIME.get(fmt)
    if mime is None:
        raise MediaError(
            f"unsupported image format {fmt!r}",
            user_message="That image format is not supported. Please send a JPEG, PNG, GIF or WebP.",
        )
    return mime, width, height


class MediaStore:
    """Content-addressed image files under ``root`` (created on first save)."""

    def __init__(self, root: str | os.PathLike[str], *, max_bytes: int = MAX_IMAGE_BYTES) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    async def save(self, data: bytes, *, mime_type: str | None = None) -> ImageRef:
        """Validate and store ``data``; return its reference. Raises :class:`MediaError`.

        ``mime_type`` (what the sender claimed) is ignored in favour of what the bytes are:
        a renamed file cannot pass as an image.
        """
        if len(data) > self.max_bytes:
            mb = self.max_bytes // (1024 * 1024)
            raise MediaError(
                f"image of {len(data)} bytes exceeds the {self.max_bytes}-byte limit",
                user_message=f"That image is larger than {mb} MB. Please send a smaller one.",
            )
        if not data:
            raise MediaError("empty file", user_message="That file is empty.")
        mime, width, height = await asyncio.to_thread(_inspect, data)
        digest = hashlib.sha256(data).hexdigest()
        await asyncio.to_thread(self._store, self._path(digest), data)
        return ImageRef(
            uri=f"media:{digest}", mime_type=mime, width=width, height=height, size_bytes=len(data)
        )

    async def save_video(self, data: bytes, *, max_bytes: int = MAX_IMAGE_BYTES) -> VideoRef:
        """Check (PyAV, off the event loop) and store a video; return its reference.

        Raises :class:`MediaError` for a file over ``max_bytes``, an empty or unreadable one,
        one without a picture (sound only), or when PyAV is not installed (extra ``video``).
        Like :meth:`save`, what the bytes are wins over what the sender claimed.
        """
        from .video import probe_video

        if len(data) > max_bytes:
            mb = max_bytes / (1024 * 1024)
            raise MediaError(
                f"video of {len(data)} bytes exceeds the {max_bytes}-byte limit",
                user_message=f"That video is larger than {mb:g} MB. Please send a shorter one.",
            )
        if not data:
            raise MediaError("empty file", user_message="That file is empty.")
        info = await asyncio.to_thread(probe_video, data)
        digest = hashlib.sha256(data).hexdigest()
        await asyncio.to_thread(self._store, self._path(digest), data)
        return VideoRef(
            uri=f"media:{digest}",
            mime_type=info.mime_type,
            duration=info.duration,
            width=info.width,
            height=info.height,
            size_bytes=len(data),
            has_audio=info.has_audio,
        )

    async def load(self, ref: ImageRef | VideoRef | str) -> bytes:
        """The bytes of a stored file (a ref or ``media:`` URI). Raises MediaError."""
        path = self.path_of(ref)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise MediaError(
                f"media file missing: {path.name}", user_message="That image is no longer available."
            ) from None

    async def data_url(self, ref: ImageRef) -> str:
        """The image as a ``data:`` URL (what HTTP providers accept)."""
        data = await self.load(ref)
        return f"data:{ref.mime_type};base64,{base64.b64encode(data).decode('ascii')}"

    def path_of(self, ref: ImageRef | VideoRef | str) -> Path:
        """Where a ``media:`` reference is stored. Raises MediaError for other URIs."""
        uri = ref if isinstance(ref, str) else ref.uri
        digest = uri.removeprefix("media:")
        if not uri.startswith("media:") or not _SHA.match(digest):
            raise MediaError(f"not a media reference: {uri[:80]!r}", user_message="Unknown image.")
        return self._path(digest)

    def _path(self, digest: str) -> Path:
        # two-level fan-out keeps directories small
        return self.root / digest[:2] / digest

    def sweep(self, *, keep: set[str], older_than: float) -> int:
        """Delete stored files (and their prepared copies) not in ``keep`` (digests) whose
        last use is before ``older_than`` (a POSIX time); returns how many originals went.

        Blocking file work: run it in a thread. A file saved again meanwhile (the same image
        sent anew) had its time refreshed by :meth:`save`, so it is not swept.
        """
        removed = 0
        if not self.root.is_dir():
            return 0
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if not _SHA.match(path.name) or path.name in keep:
                    continue
                try:
                    if path.stat().st_mtime >= older_than:
                        continue
                    path.unlink()
                except FileNotFoundError:
                    continue
                removed += 1
                for derived in folder.glob(f"{path.name}.*"):  # images.py's prepared copies
                    derived.unlink(missing_ok=True)
        return removed

    @classmethod
    def _store(cls, path: Path, data: bytes) -> None:
        if path.exists():
            # content-addressed: already there. Refresh its time so retention sees it in use.
            os.utime(path)
        else:
            cls._write(path, data)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: a crash never leaves half an image under its hash
