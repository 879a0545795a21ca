"""Kapacitor socket-UDF wire protocol: messages and framing, without I/O."""
