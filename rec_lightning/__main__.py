"""``python -m rec_lightning ...``: see :mod:`rec_lightning.cli`."""

from rec_lightning.cli import main

if __name__ == "__main__":
    main()
