"""Known conformance gaps of the numpy backend: (loss, check, dtype) -> reason. None known."""

GAPS: dict[tuple[str, str, str], str] = {}
