"""The one exception type users see for bad input.

Every message names the offending field (as a dotted path into the spec, e.g.
``axes.context`` or ``gpus.my-gpu.mem_bw``) and what is allowed there. The CLI turns it
into a one-line message on stderr and exit code 2.
"""


class SpecError(ValueError):
    """Bad input: an unknown key or name, an empty axis, an out-of-range value, a bad file."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)
