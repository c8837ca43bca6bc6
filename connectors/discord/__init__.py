"""The Discord connector's platform pieces (discord.py); the connector class comes later.

- :mod:`.routing` — which messages the bot answers and what they become
- :mod:`.access` — allow-lists by user, role, channel and guild; admins
- :mod:`.media` — image attachments in (≤ 20 MB), generated images out
- :mod:`.ratelimits` — Discord's buckets learned from the ``X-RateLimit-*`` headers

``SETUP.md`` next to this file lists the Discord application settings a user needs. The
``discord`` extra installs discord.py; importing these modules without it fails with
``ModuleNotFoundError: discord``.
"""
