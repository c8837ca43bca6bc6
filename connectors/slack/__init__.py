"""The Slack connector's platform pieces (the connector class itself comes later).

Each module stands on its own and is tested against :class:`relaybot.testing.FakeSlackServer`:

- :mod:`.formatting` — Markdown → ``markdown`` blocks (≤ 12,000 characters, split with fences
  repaired) and Slack mrkdwn for ``text`` fallbacks and ``section`` blocks
- :mod:`.routing` — event payload → :class:`~.routing.RoutedMessage` (which events are answered
  and in which thread; dedupe key = ``event_id``)
- :mod:`.access` — allow-lists by user, channel and workspace; admins; one denial notice
- :mod:`.media` — image downloads with the bot token (≤ 20 MB) and files-v2 uploads
- ``manifest.json`` — the Slack app manifest a user imports (see ``README.md``)

slack_sdk / slack_bolt come with the ``slack`` extra (``pip install 'relaybot[slack]'``).
"""
