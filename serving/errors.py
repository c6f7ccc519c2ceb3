"""The exceptions of serving's client side: a failed or refused call (`ServingError`), inputs off the spec.

Imports only grpc (for the status codes), so that the client, the input checks and `serving.labels` share them.
"""

from __future__ import annotations

import grpc


class ServingError(Exception):
    """A failed call to the model server, or a request refused before it was sent.

    Attributes:
        code: the gRPC status code (`grpc.StatusCode.NOT_FOUND`, ...).
        details: the server's message.
    """

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNKNOWN, details: str = ""):
        super().__init__(message)
        self.code = code
        self.details = details


class InputError(ServingError, ValueError):
    """Inputs that do not match the feature spec; raised before sending, code INVALID_ARGUMENT."""

    def __init__(self, message: str):
        super().__init__(message, grpc.StatusCode.INVALID_ARGUMENT, message)
