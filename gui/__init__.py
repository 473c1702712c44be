"""Chat-room's desktop client: an ordinary IRC client in tkinter.

Modules (model and network never import tkinter; only ``view`` does):

* :mod:`.model`    -- conversations, lines, members, unread counts; ``ChatModel.handle(message)``
* :mod:`.commands` -- slash commands typed by the user, turned into IRC messages
* :mod:`.client`   -- the network client: a thread, a socket, CAP, PING/lag, TLS, reconnect; events on a queue
* :mod:`.settings` -- the connect dialog's answers and preferences, in the user's config directory
* :mod:`.notify`   -- desktop notifications (notify-send, osascript)
* :mod:`.view`     -- the tkinter window and the connect dialog; draws only
* :mod:`.app`      -- ``ChatApp``, the controller: drains the client's queue with ``after()``
* :mod:`.__main__` -- ``chatroom-gui`` / ``python -m gui``
"""
