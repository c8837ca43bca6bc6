"""Model I/O: the context a provider is sent (history, token counts, images and video frames,
media storage), prices, and the resilience layer around providers (retries, fallbacks, rate
limits, the spend guard's reservations)."""
