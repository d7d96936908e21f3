"""Scarp's engine: raster I/O, tiling, metrics, the workspace store, models and training.

It never imports streamlit, and importing it stays cheap: heavy modules are imported where used.
"""
