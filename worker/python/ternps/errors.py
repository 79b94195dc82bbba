"""The exception ternps raises: a gRPC-style status code and a message."""


class TernpsError(RuntimeError):
    """A failed ternps call.

    Attributes:
      code: the status code's name, as gRPC spells it ("UNAVAILABLE", "ABORTED",
        "INVALID_ARGUMENT", ...). ABORTED means this worker was dropped or replaced:
        call Worker.rejoin(); see the C++ header ternps/worker.h for what each code
        leaves behind.
      message: what went wrong, naming the shard or the field.
    """

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
