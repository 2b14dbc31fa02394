"""Generated ``Ask`` requests and the checks every answer to one must pass.

Used by the tests that send thousands of generated, malformed and adversarial
requests to a real in-process EP with the default config and the installed
plugins (tests/test_wire_requests.py, test_wire_undecodable.py,
test_reply_limits.py, test_server_resources.py). Not collected as tests.

- :mod:`.encoding`: requests encoded to wire bytes by hand, so that a test can
  send what protobuf's own Python API refuses to build or copy (taskinfo
  nested 200 levels deep, strings that are not UTF-8, unknown and malformed
  fields, plain garbage).
- :mod:`.oracle`: from a generated request alone, which fields the server must
  name and whether it must answer with a verdict.
- :mod:`.strategies`: the hypothesis strategies that generate the requests.
- :mod:`.harness`: the running EP, a raw ``Ask`` callable, and the checks.
"""
