"""gRPC server of interest-tree: servicers, conversion, runtime and CLI."""
