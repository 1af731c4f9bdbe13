"""Tools that run from a checkout of this repository (never installed on nodes)."""
