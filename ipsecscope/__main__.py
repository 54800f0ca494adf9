"""`python -m ipsecscope` = the `ipsecscope` command."""

import sys

from .cli import main

sys.exit(main())
