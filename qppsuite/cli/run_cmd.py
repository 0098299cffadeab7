"""``qppsuite run``: boot an image with plugins (filled in by the core work)."""
