"""relaybot: put AI assistants into the chats people already use."""
