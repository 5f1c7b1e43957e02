def group_name(room_name):
    """The channel-layer group of a chat room."""
    return f"chat_{room_name}"
