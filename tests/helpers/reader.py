"""Reads and parses the store file in a loop until told to stop; prints how often it read."""

import json
import sys
from pathlib import Path


def main() -> None:
    store_path, stop_path = Path(sys.argv[1]), Path(sys.argv[2])
    reads = 0
    while not stop_path.exists():
        json.loads(store_path.read_bytes())  # raises (and exits non-zero) on a torn file
        reads += 1
    print(reads)


if __name__ == "__main__":
    main()
