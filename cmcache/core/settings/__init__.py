"""Settings: the key table (schema), loading and validation (load), showing and editing (edit)."""
