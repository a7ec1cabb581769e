"""Known conformance gaps of the jax backend: (loss, check, dtype) -> reason. None known."""

GAPS: dict[tuple[str, str, str], str] = {}
