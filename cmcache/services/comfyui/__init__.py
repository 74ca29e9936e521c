"""ComfyUI: the custom node cmcache installs, and what workflows need."""
