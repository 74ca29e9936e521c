"""Where the disk went: `du`, `report`, `dedupe` and the one walk they share."""
