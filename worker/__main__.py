"""`python -m worker` is the same as the `subsync` console script."""

from worker.cli import main

if __name__ == "__main__":
    main()
