"""In-process tests of the taxonomy package: the engine's rooms, its store and its adapters."""
