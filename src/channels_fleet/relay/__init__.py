"""What both sides share: the relay between processes, its message formats and names, liveness."""
