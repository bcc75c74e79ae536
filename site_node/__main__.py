"""``python -m site_node``: the site's command line, the same as ``radshare-site``."""

from site_node.cli import main

if __name__ == "__main__":
    main()
