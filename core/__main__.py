"""``python -m relaybot.core`` runs the ``relaybot`` command."""

from relaybot.core.cli.main import main

main()
