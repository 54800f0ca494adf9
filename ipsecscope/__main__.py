"""`python -m ipsecscope` = the `ipsecscope` command."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the CLI itself is still being imported: no traceback
    sys.exit(130)

sys.exit(main())
