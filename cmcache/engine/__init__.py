"""The download engine: aria2 behind one adapter, and the private daemon."""
