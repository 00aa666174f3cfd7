"""Python client for the interest-tree gRPC API; generated messages live in `interesttree.v1`."""
