"""A local fake of the Compute Engine REST API v1, validated by the official discovery document.

Used by the pytest suite (tests/integration/test_gcp_request_bodies.py) and by the molecule scenario
molecule/gcp_spot_capacity. It only ever listens on loopback.
"""

from .discovery import DiscoveryDocument, Problem, load_document
from .keys import make_service_account_key
from .server import FakeCompute, FakeComputeServer

__all__ = [
    "DiscoveryDocument",
    "FakeCompute",
    "FakeComputeServer",
    "Problem",
    "load_document",
    "make_service_account_key",
]
