"""What plugin and connector authors code against: the data types, the error tree, the connector
and provider bases, the hook specifications, commands, jobs, declared settings, the spend guard
and the typed boundary (:mod:`.host`). Re-exported publicly from :mod:`relaybot`.

A message's path through the core reads from the sibling packages' names: these contracts, the
:mod:`~relaybot.core.runtime` that receives and answers it, the :mod:`~relaybot.core.modelio`
that builds the model's context and talks to providers, the :mod:`~relaybot.core.streaming`
scheduler that delivers the answer, and the :mod:`~relaybot.core.storage` that keeps it all.
"""
