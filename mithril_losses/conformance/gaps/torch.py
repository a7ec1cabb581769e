"""Known conformance gaps of the torch backend: (loss, check, dtype) -> reason. None known."""

GAPS: dict[tuple[str, str, str], str] = {}
