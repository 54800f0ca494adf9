"""`python -m ipsecscope` = the `ipsecscope` command."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the CLI itself is still being imported: no traceback
    sys.exit(130)
except RuntimeError as exc:  # the same, wrapped by a class's __set_name__ (see cli.interrupted)
    if isinstance(exc.__cause__, KeyboardInterrupt):
        sys.exit(130)
    raise

sys.exit(main())
