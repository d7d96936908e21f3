"""Raster, mask and vector reading and writing."""

import warnings

from rasterio.errors import NotGeoreferencedWarning

# A raster without georeferencing (a PNG, a JPEG, a mask of one) is on pixel coordinates on purpose,
# so rasterio's NotGeoreferencedWarning is noise. It is silenced once for the process: a
# warnings.catch_warnings() block around each open is not thread-safe, and the tile reader, the
# writers and Streamlit's sessions are threads.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
