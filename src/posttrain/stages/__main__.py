import sys

from posttrain.stages import main

sys.exit(main())
