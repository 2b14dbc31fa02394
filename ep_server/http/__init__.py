"""The HTTP door: REST/JSON from the proto's ``google.api.http`` rules, the
IVOA note's ``/accepts`` and ``/accept``, ``/openapi.json`` and the operator
page, served beside gRPC by the same process (see :mod:`~ep_server.http.app`)."""
