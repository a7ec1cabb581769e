"""Known conformance gaps of the array_api_strict backend: (loss, check, dtype) -> reason. None known."""

GAPS: dict[tuple[str, str, str], str] = {}
