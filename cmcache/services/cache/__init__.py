"""The cache of one root: opening it, uses and pins, prune, prefetch, prediction, verification."""
