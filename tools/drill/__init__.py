"""The failover drill on the embedded local default: a tool of this repository, not shipped to nodes."""
