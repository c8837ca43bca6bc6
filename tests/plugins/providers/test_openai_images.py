"""OpenAIProvider.generate_image against the fake images API, alone and through the resilience layer."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from relaybot.core.contracts.errors import (
    CapabilityError,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitError,
    ProviderUnavailableError,
)
from relaybot.core.contracts.provider import ImageRequest
from relaybot.core.modelio.resilience import ResilientProvider, RetryPolicy
from relaybot.core.testing.fake_openai import FakeOpenAIServer
from relaybot.plugins.providers._openai_images import SAFETY_MESSAGE
from relaybot.plugins.providers.openai import OpenAIConfig, OpenAIProvider

KEY = "sk-images-0a1b2c3d4e5f"


@pytest.fixture
async def make(fake_openai: FakeOpenAIServer):
    made: list[OpenAIProvider] = []

    def build(name: str = "openai", **config) -> OpenAIProvider:
        config.setdefault("base_url", fake_openai.base_url)
        config.setdefault("api_key", KEY)
        provider = OpenAIProvider(name, OpenAIConfig(**config))
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.aclose()


def image_bodies(fake: FakeOpenAIServer) -> list[dict]:
    return [r.json for r in fake.requests if r.path == "/v1/images/generations"]


async def test_gpt_image_answers_with_a_png_and_usage(make, fake_openai) -> None:
    provider = make()
    assert provider.capabilities.image_generation
    image = await provider.generate_image(ImageRequest("a red fox", "gpt-image-1", quality="low"))
    assert Image.open(io.BytesIO(image.data)).format == "PNG"
    assert image.usage is not None and image.usage.output_tokens > 0
    assert image_bodies(fake_openai) == [
        {"model": "gpt-image-1", "prompt": "a red fox", "n": 1, "size": "1024x1024", "quality": "low"}
    ]
    assert fake_openai.requests[-1].headers["authorization"] == f"Bearer {KEY}"


async def test_a_url_answer_is_downloaded(make, fake_openai) -> None:
    provider = make()
    request = ImageRequest("a boat", "dall-e-3", options={"response_format": "url"})
    image = await provider.generate_image(request)
    assert Image.open(io.BytesIO(image.data)).format == "PNG" and image.revised_prompt == "a boat"
    assert image_bodies(fake_openai)[-1]["response_format"] == "url"


async def test_a_safety_refusal_is_its_own_error_and_secrets_stay_out(make, fake_openai) -> None:
    provider = make()
    fake_openai.add_error(400, f"rejected by the safety system (key {KEY})", code="content_policy_violation")
    with pytest.raises(ProviderError) as refused:
        await provider.generate_image(ImageRequest("something", "gpt-image-1"))
    assert type(refused.value) is ProviderError  # neither retried nor handed to a fallback
    assert refused.value.user_message == SAFETY_MESSAGE
    assert KEY not in str(refused.value)


async def test_statuses_map_to_the_usual_typed_errors(make, fake_openai) -> None:
    provider = make()
    fake_openai.add_error(429, "slow down", retry_after=7)
    with pytest.raises(ProviderRateLimitError) as limited:
        await provider.generate_image(ImageRequest("x", "gpt-image-1"))
    assert limited.value.retry_after == 7
    fake_openai.add_error(401, "bad key", code="invalid_api_key")
    with pytest.raises(ProviderAuthError):
        await provider.generate_image(ImageRequest("x", "gpt-image-1"))


async def test_the_resilience_layer_retries_then_falls_back(make, fake_openai) -> None:
    primary, backup = make("primary"), make("backup", model="gpt-4o-mini")
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    chain = ResilientProvider(primary, [backup], policy=RetryPolicy(max_attempts=2), sleep=sleep)
    for _ in range(2):
        fake_openai.add_error(503, "overloaded")
    image = await chain.generate_image(ImageRequest("a lighthouse", "gpt-image-1"))
    assert image.provider == "backup" and image.data.startswith(b"\x89PNG")
    assert len(sleeps) == 1 and len(image_bodies(fake_openai)) == 3  # retry, then the fallback


async def test_chain_members_that_cannot_draw_are_skipped(make, fake_openai) -> None:
    class NoImages(OpenAIProvider):
        async def generate_image(self, request: ImageRequest):  # pragma: no cover - never called
            raise AssertionError("skipped by capability")

    texts_only = NoImages("texts", OpenAIConfig(base_url=fake_openai.base_url, api_key=KEY))
    object.__setattr__(texts_only, "capabilities", type(texts_only.capabilities)(image_generation=False))
    try:
        with pytest.raises(CapabilityError):
            await ResilientProvider(texts_only).generate_image(ImageRequest("x", "gpt-image-1"))
        fake_openai.add_error(503, "down")
        chain = ResilientProvider(make("drawer"), [texts_only], policy=RetryPolicy(max_attempts=1))
        with pytest.raises(ProviderUnavailableError):
            await chain.generate_image(ImageRequest("x", "gpt-image-1"))  # no fallback can draw
    finally:
        await texts_only.aclose()
