"""The ``embgen`` console script: the same command as the native binary."""

import sys

from ._embgen import main as _main


def main() -> None:
    # The program name is what clap shows in usage lines; the script's path is noise.
    sys.exit(_main(["embgen", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
