"""The project's service layer (a top-level package named as many teams name theirs)."""
