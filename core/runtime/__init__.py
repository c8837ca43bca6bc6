"""The running bot: the app (start/stop), the dispatcher that takes each message in, the turns
that decide who is answered when, answering itself (:mod:`.answering`), a chat's conversations,
checkpoints, the plugin host, the job runner, the web-server helper, and the typed boundary's
implementation (:mod:`.services`)."""
