"""Suite-wide setup: JAX on the CPU, absl flags usable outside an absl app."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import flags  # pylint: disable=g-import-not-at-top

if not flags.FLAGS.is_parsed():
  flags.FLAGS.mark_as_parsed()


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: a test of a minute or more (several processes)")
  config.addinivalue_line("markers", "multiprocess: starts several local JAX processes")
