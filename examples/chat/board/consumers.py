"""One socket for the board page, two streams: the bound Card model and the chat room "board"."""

from chat.consumers import ChatConsumer

from channels_fleet.multiplex import Demultiplexer

from .bindings import CardBinding

# The board page's chat is the room "board": /chat/board/ talks to it too.
CHAT_ROOM = "board"


class BoardSocket(Demultiplexer):
    consumers = {"board": CardBinding.consumer, "chat": ChatConsumer}

    def stream_scope(self, name):
        scope = super().stream_scope(name)
        if name == "chat":
            # ChatConsumer reads its room from the URL; this socket's URL has none.
            scope["url_route"] = {"args": (), "kwargs": {"room": CHAT_ROOM}}
        return scope
