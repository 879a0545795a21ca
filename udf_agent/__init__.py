"""Kapacitor socket-UDF agent that scores live points with registered models."""
