"""``python -m hub``: the hub's command line, the same as ``radshare-hub``."""

from hub.cli import main

if __name__ == "__main__":
    main()
