"""The ``relaybot`` command line (:mod:`.main`), the TOML configuration it loads (:mod:`.config`)
and the event loop it runs on (:mod:`.eventloop`)."""
