"""Where models come from: catalogs and their sync, refs as users copy them, links remembered."""
