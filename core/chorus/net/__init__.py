"""Networking with no Chorus dependencies: the pooled HTTP/1.1 upstream client and the SSE parser."""
