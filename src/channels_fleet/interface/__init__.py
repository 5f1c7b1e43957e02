"""The interface side: the gateway Daphne serves; holds client sockets, imports no project code."""
