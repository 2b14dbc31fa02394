"""Test-only plugins, in one place.

``tests/`` is on ``sys.path`` (pytest's ``pythonpath``, and ``PYTHONPATH``
for the server processes the tests and benchmarks start), so these load by
import path: ``[plugins] modules = ["slow=fake_plugins.slow"]``.

- :mod:`fake_plugins.common`: small plugin classes (offering, declining,
  raising, slow, blocking ...) and :class:`~fake_plugins.common.FakeSource`,
  for registries built in-process.
- :mod:`fake_plugins.slow`, :mod:`~fake_plugins.stuck`,
  :mod:`~fake_plugins.slow_start`: whole plugin modules for server processes.
- :mod:`fake_plugins.booking_log`: offers, and writes down every booking
  announced to it in a file that replicas share.
- :mod:`fake_plugins.synthetic`: twenty quick plugins for the benchmark.
"""
