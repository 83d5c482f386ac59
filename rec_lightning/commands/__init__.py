"""One module per non-Trainer command; each exposes ``main(argv: list[str]) -> None``."""
