"""Serving layer: start or attach to a vLLM server, talk to it, read its metrics."""
