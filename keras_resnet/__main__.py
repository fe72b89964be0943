"""`python -m keras_resnet` runs the command line."""

import sys

from keras_resnet.cli import main

sys.exit(main())
