"""``qppsuite batch``: many independent runs, each writing its own database, merged into one at the end."""
