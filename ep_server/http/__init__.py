"""The HTTP door: what the EP serves over HTTP beside gRPC."""
