"""The local cache: model tree, staging, index and locks."""
