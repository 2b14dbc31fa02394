"""``make bench``: ep-server against a bare grpc.aio server, as ratios from one run."""
