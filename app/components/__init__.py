"""Pieces several pages share: the job progress panel (and, from the Review work, the map)."""
