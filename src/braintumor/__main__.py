import sys

from braintumor.cli import main

sys.exit(main())
