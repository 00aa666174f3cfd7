"""Interest trees: history, data-derived structure, model naming within checks, storage."""
