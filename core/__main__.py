"""``python -m relaybot.core`` runs the ``relaybot`` command."""

from relaybot.core.cli import main

main()
