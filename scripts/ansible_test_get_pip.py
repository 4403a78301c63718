"""Stand-in for the get-pip.py that `ansible-test --venv` downloads from a host this machine cannot reach.

ansible-test runs it inside a fresh virtualenv with pip's own options and the pip version it wants; we seed pip
from the interpreter's bundled ensurepip and let that pip install the requested version from PyPI.
"""

import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
# get-pip.py's own flags; pip install does not know them.
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
