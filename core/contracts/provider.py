"""The provider contract: how the core asks a model for a streamed answer.

A provider plugin registers a :class:`ProviderType` (its ``type`` name, config model and
factory) through the ``register_providers`` hook. For every ``[providers.NAME]`` table whose
``type`` matches, the core builds one instance with :meth:`ProviderType.factory`.

Besides streaming chat answers, a provider with ``capabilities.image_generation`` draws
images (:meth:`BaseProvider.generate_image`); the core calls both through
:class:`~relaybot.core.modelio.resilience.ResilientProvider` (retries, rate limits, fallbacks).
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from relaybot.core.contracts.errors import CapabilityError
from relaybot.core.contracts.models import ProviderEvent, ProviderRequest, Usage
from relaybot.core.modelio.images import ImageLimits


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """One picture to draw: ``prompt`` with ``model`` at ``size`` (``quality`` empty: the
    model's default). ``options`` are extra API fields (e.g. ``response_format``);
    ``timeout`` is how long to wait for the image, in seconds."""

    prompt: str
    model: str
    size: str = "1024x1024"
    quality: str = ""
    timeout: float = 180.0
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """A drawn picture: its bytes and type, the usage the provider reported (if any), and the
    prompt as the model rewrote it (DALL·E 3 does)."""

    data: bytes
    mime_type: str = "image/png"
    usage: Usage | None = None
    revised_prompt: str = ""
    #: the config name of the provider that drew it (set by the resilience layer)
    provider: str = ""


@dataclass(frozen=True, slots=True)
class ProviderCapabilities:
    """What a provider/model can do; the core checks these before calling (capabilities are data).

    ``tokenizer`` names a tiktoken encoding when token counts are exact for this model, or is
    ``None`` when the core must estimate (see :mod:`relaybot.core.modelio.tokens`). ``image_limits``
    are the per-image bounds of a vision model: the core resizes and re-encodes images to fit
    them (see :mod:`relaybot.core.modelio.images`); ``None`` sends stored images unchanged. ``video``
    means the API takes videos themselves (a :class:`~relaybot.core.contracts.models.VideoPart` with a
    ``data:`` URL); otherwise a vision model gets frames sampled from them
    (:mod:`relaybot.core.modelio.video_parts`).
    """

    streaming: bool = True
    vision: bool = False
    image_generation: bool = False
    context_window: int = 8192
    max_output_tokens: int = 1024
    tokenizer: str | None = None
    image_limits: ImageLimits | None = None
    video: bool = False


class BaseProviderConfig(BaseModel):
    """Keys every ``[providers.NAME]`` table accepts. Provider plugins subclass this.

    Unknown keys are an error (``extra="forbid"``) so typos are caught at start-up.
    """

    model_config = ConfigDict(extra="forbid")

    type: str
    model: str = ""
    context_window: int | None = Field(default=None, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)
    # ── resilience (see relaybot.core.modelio.resilience) ──
    #: retries on the same provider after the first attempt (429/5xx/529/timeouts/408/409)
    max_retries: int = Field(default=2, ge=0)
    #: longest ``retry_after`` (and rate-limiter wait) honoured, in seconds; a longer one
    #: moves on to the next fallback at once
    retry_max_wait: float = Field(default=60, ge=0)
    #: other ``[providers.*]`` names to ask, in order, when this one is down, overloaded,
    #: rate limited or rejects its key/model
    fallbacks: list[str] = Field(default_factory=list)
    #: requests / tokens per minute allowed by the provider; waited for before sending
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    #: when a budget has no room for this model: a cheaper model of this provider, or another
    #: ``[providers.*]`` name, that answers instead (the user is told); empty: refuse
    downgrade_to: str = ""


class BaseProvider(abc.ABC):
    """A model behind an API (or in-process) that streams answers.

    Subclasses set :attr:`capabilities` and implement :meth:`stream`.
    """

    #: the config name (``[providers.NAME]``), used in logs and errors
    name: str
    #: the model identifier sent to the API
    model: str
    capabilities: ProviderCapabilities

    @abc.abstractmethod
    def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        """Stream the answer to ``request`` as ``TextDelta``/``Usage``/``Finish`` events.

        Contract:
        - yields ``TextDelta`` values as text arrives (refusal text with ``kind="refusal"``);
        - yields at most one ``Usage`` (provider-reported) and ends with exactly one ``Finish``;
        - raises a :class:`relaybot.core.contracts.errors.ProviderError` subclass on failure, including
          failures after some text was yielded;
        - when the consumer stops iterating (``aclose()``/cancellation) it must release the
          network connection promptly.
        """

    async def generate_image(self, request: ImageRequest) -> GeneratedImage:
        """Draw one picture (providers with ``capabilities.image_generation``).

        Raises a :class:`relaybot.core.contracts.errors.ProviderError` subclass on failure, as
        :meth:`stream` does (so retries and fallbacks treat both alike), and
        :class:`~relaybot.core.contracts.errors.CapabilityError` when this provider cannot draw.
        """
        raise CapabilityError(f"{self.name}: this provider cannot generate images")

    async def aclose(self) -> None:  # noqa: B027 - optional: most providers have nothing to close
        """Release clients and connections. Called once at shutdown."""


ProviderFactory = Callable[[str, Any], BaseProvider]


@dataclass(frozen=True, slots=True)
class ProviderType:
    """A kind of provider a plugin offers, selected by ``type = "..."`` in config."""

    type: str
    config_model: builtins.type[BaseProviderConfig]
    factory: ProviderFactory
    description: str = ""
