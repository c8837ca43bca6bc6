"""Images and videos people send (and images the bot generates), stored by content hash.

Connectors hand raw bytes to :meth:`MediaStore.save`, which checks that they are a real,
reasonably sized image (pillow, off the event loop) and stores them once under their SHA-256.
Messages then refer to them as ``media:<sha256>`` (:class:`~relaybot.core.contracts.models.ImageRef`), so
the database holds references, not blobs, and providers load bytes only when they need them.

Refusals raise :class:`MediaError`, whose ``user_message`` says what was wrong in words a person
can act on (too big, not an image, damaged).

Decoding is what costs memory (a 409 KB PNG of 9,990 × 9,990 RGBA pixels decodes to 400 MB), so
every decode — validating here, preparing for a provider in :mod:`.images` — is bounded twice:

* by pixel count: at most :data:`MAX_DECODE_PIXELS` pixels are decoded per image. JPEGs are
  decoded at reduced scale (libjpeg's draft mode: 1/2 … 1/8) where that is enough, so large
  photos pass; other formats above the bound are refused with a clear message;
* by a per-process budget (:class:`DecodeBudget`, :data:`DECODE_BUDGET`): a decode reserves its
  pixel memory first and waits while concurrent decodes hold the budget, so many near-limit
  images at once queue instead of multiplying the peak.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from relaybot.core.contracts.errors import MediaError
from relaybot.core.contracts.models import ImageRef, VideoRef

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

#: platforms let bots download up to 20 MB; we refuse anything larger before decoding it
MAX_IMAGE_BYTES = 20 * 1024 * 1024
#: images with more pixels than this are refused (decompression-bomb guard; ~ 12,000 × 8,000)
MAX_PIXELS = 100_000_000
#: at most this many pixels are decoded per image (after reduced JPEG decoding): ~ 6,900 × 4,600
MAX_DECODE_PIXELS = 32_000_000
#: decoded pixel memory all concurrent decodes of this process may hold together
DECODE_BUDGET_BYTES = 256 * 1024 * 1024
#: how long a decode waits for its share of the budget before the image is refused as "busy"
DECODE_WAIT_SECONDS = 120.0
# bytes per pixel as pillow stores each mode in memory (RGB is padded to 4)
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "LA": 4, "PA": 4, "RGB": 4, "RGBA": 4, "CMYK": 4}

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


class DecodeBudget:
    """Bytes of decoded pixels that may be held at once by this process's image decodes.

    ``with budget.reserve(n):`` holds ``n`` bytes for the block. A request larger than the
    whole budget is refused at once (:class:`MediaError`); otherwise it waits, up to
    ``wait_seconds``, until concurrent holders release enough, then is refused as busy.
    Thread-safe: decodes run in worker threads.
    """

    def __init__(
        self, capacity: int = DECODE_BUDGET_BYTES, *, wait_seconds: float = DECODE_WAIT_SECONDS
    ) -> None:
        if capacity <= 0:
            raise ValueError("DecodeBudget capacity must be positive")
        self.capacity = capacity
        self.wait_seconds = wait_seconds
        #: bytes held now, and how many decodes are waiting for their share
        self.used = 0
        self.waiting = 0
        self._cond = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Hold ``nbytes`` of the budget for the ``with`` block (see the class docstring)."""
        if nbytes > self.capacity:
            raise MediaError(
                f"image needs {nbytes} bytes to decode, over the {self.capacity}-byte decode budget",
                user_message=_TOO_LARGE_TO_PROCESS,
            )
        with self._cond:
            self.waiting += 1
            self._cond.notify_all()  # lets observers (tests, metrics) see the queue grow
            try:
                fits = self._cond.wait_for(lambda: self.used + nbytes <= self.capacity, self.wait_seconds)
            finally:
                self.waiting -= 1
            if not fits:
                raise MediaError(
                    f"no decode budget freed within {self.wait_seconds:g} s",
                    user_message="I'm busy with other large images right now. Please try again in a minute.",
                )
            self.used += nbytes
        try:
            yield
        finally:
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()

    def wait_until(self, predicate: Callable[[DecodeBudget], bool], timeout: float) -> bool:
        """Block until ``predicate(self)`` holds (checked on every change); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)


#: the budget every decode of this process shares
DECODE_BUDGET = DecodeBudget()

_TOO_LARGE_TO_PROCESS = (
    f"That image has too many pixels for me to process (at most {MAX_DECODE_PIXELS // 1_000_000} "
    "megapixels, or a JPEG photo). Please send a smaller one."
)


def decode_cost(img: PILImage) -> int:
    """Bytes ``img`` takes once decoded at its current (possibly draft-reduced) size.

    Raises :class:`MediaError` when it has more than :data:`MAX_DECODE_PIXELS` pixels.
    """
    width, height = img.size
    if width * height > MAX_DECODE_PIXELS:
        raise MediaError(
            f"image of {width} x {height} pixels is over the {MAX_DECODE_PIXELS}-pixel decode limit",
            user_message=_TOO_LARGE_TO_PROCESS,
        )
    return width * height * _MODE_BYTES.get(img.mode, 4)


def reduce_for_validation(img: PILImage) -> None:
    """Decode a JPEG at the smallest scale libjpeg offers (1/8): the whole file is still read
    and checked, at a fraction of the memory. Other formats are left as they are."""
    if img.format in ("JPEG", "MPO"):
        width, height = img.size
        img.draft(img.mode if img.mode in ("RGB", "L") else "RGB", (max(1, width // 8), max(1, height // 8)))


def _inspect(data: bytes, budget: DecodeBudget | None = None) -> tuple[str, int, int]:
    """Validate image bytes fully (decode, not just the header); return (mime, width, height).

    The decode is bounded by :data:`MAX_DECODE_PIXELS` and ``budget`` (:data:`DECODE_BUDGET`).
    """
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
                reduce_for_validation(img)
                with (budget or DECODE_BUDGET).reserve(decode_cost(img)):
                    img.load()  # decodes everything: truncated files fail here, not later
    except MediaError:
        raise
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

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        max_bytes: int = MAX_IMAGE_BYTES,
        decode_budget: DecodeBudget | None = None,
    ) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        #: bounds the memory of validating images (the process-wide :data:`DECODE_BUDGET`)
        self.decode_budget = decode_budget or DECODE_BUDGET

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
        mime, width, height = await asyncio.to_thread(_inspect, data, self.decode_budget)
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
        from relaybot.core.modelio.video import probe_video

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
