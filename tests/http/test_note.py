"""The IVOA note's interface, GET /accepts and POST /accept: the query
parsing and the answer's shape on their own, then every form of the
question through a real server."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

import pytest
from fake_plugins.common import Declining, Offering

from ep_server import Cause, Reason
from ep_server.client.note import verdict
from ep_server.errors import InvalidArgument
from ep_server.http.note import note_answer, taskinfo_from_query

DOCKER = "uri://docker-container"
SEED = {"tasktype": DOCKER, "taskinfo": {"image": "docker.io/example:1.0"}}


# --- the query and the answer, on their own -------------------------------


def test_query_values_are_text_but_plain_integers_and_booleans():
    tasktype, taskinfo = taskinfo_from_query(
        [
            ("tasktype", DOCKER),
            ("taskinfo.image", "docker.io/example:1.0"),
            ("taskinfo.cores", "4"),
            ("taskinfo.gpu", "true"),
            ("taskinfo.tag", "1.10"),
            ("taskinfo.id", "007"),
            ("taskinfo.big", "1" * 30),
        ]
    )
    assert tasktype == DOCKER
    assert taskinfo == {
        "image": "docker.io/example:1.0",
        "cores": 4,
        "gpu": True,
        "tag": "1.10",
        "id": "007",
        "big": "1" * 30,
    }


def test_query_dotted_names_nest_and_repeated_names_make_lists():
    _, taskinfo = taskinfo_from_query(
        [
            ("taskinfo.a.b", "1"),
            ("taskinfo.a.c", "x"),
            ("taskinfo.port", "80"),
            ("taskinfo.port", "443"),
        ]
    )
    assert taskinfo == {"a": {"b": 1, "c": "x"}, "port": [80, 443]}


def test_query_takes_a_whole_taskinfo_as_json():
    _, taskinfo = taskinfo_from_query([("taskinfo", '{"image": "x", "n": 1.5}')])
    assert taskinfo == {"image": "x", "n": 1.5}


@pytest.mark.parametrize(
    ("pairs", "field"),
    [
        ([("colour", "red")], "colour"),
        ([("taskinfo", "[1]")], "taskinfo"),
        ([("taskinfo", "{nope")], "taskinfo"),
        ([("taskinfo", "{}"), ("taskinfo.a", "1")], "taskinfo"),
        ([("taskinfo.a", "1"), ("taskinfo.a.b", "2")], "taskinfo.a.b"),
        ([("taskinfo.a..b", "1")], "taskinfo.a..b"),
        ([("tasktype", DOCKER), ("tasktype", DOCKER)], "tasktype"),
    ],
)
def test_query_refuses_what_it_cannot_read_naming_the_parameter(pairs, field):
    with pytest.raises(InvalidArgument) as caught:
        taskinfo_from_query(pairs)
    assert field in {v.field for v in caught.value.violations}


def test_answer_puts_the_first_offer_on_top_and_the_others_under_interfaces():
    response = {
        "responseword": "YES",
        "offers": [
            {"servicetype": "uri://a", "serviceinfo": {"endpoint": "http://a"}, "plugin": "p"},
            {"servicetype": "uri://b", "serviceinfo": {"endpoint": "http://b"}, "message": "m"},
        ],
        "reasons": [{"code": "NO_GPU", "plugin": "q"}],
    }
    assert note_answer(response) == {
        "responseword": "YES",
        "reponseword": "YES",
        "servicetype": "uri://a",
        "serviceinfo": {"endpoint": "http://a"},
        "plugin": "p",
        "interfaces": [
            {"servicetype": "uri://b", "serviceinfo": {"endpoint": "http://b"}, "message": "m"}
        ],
        "reasons": [{"code": "NO_GPU", "plugin": "q"}],
    }


def test_a_no_has_reasons_and_no_service():
    answer = note_answer({"responseword": "NO", "reasons": [{"code": "X"}]})
    assert answer == {
        "responseword": "NO",
        "reponseword": "NO",
        "interfaces": [],
        "reasons": [{"code": "X"}],
    }


# --- through a real server ---------------------------------------------------


def call(
    url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    lines = []
    for name, value in fields.items():
        lines += [f"--{boundary}", f'Content-Disposition: form-data; name="{name}"', "", value]
    body = "\r\n".join([*lines, f"--{boundary}--", ""]).encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.fixture
def site(ep_server):
    """The default config's docker answer to the seed's question."""
    return ep_server(allow=["static", "docker"]).http_url


def violations(status: dict[str, Any]) -> dict[str, str]:
    for detail in status.get("details", ()):
        if detail["@type"].endswith("BadRequest"):
            return {v.get("field", ""): v["description"] for v in detail["field_violations"]}
    return {}


def test_get_accepts_answers_the_seeds_question_as_the_note_does(site):
    query = urllib.parse.urlencode({"tasktype": DOCKER, "taskinfo.image": "docker.io/example:1.0"})
    status, headers, answer = call(f"{site}/accepts?{query}")
    assert status == 200
    assert headers["x-request-id"]
    assert verdict(answer) == "YES"  # as the ep client reads it
    assert answer["responseword"] == answer["reponseword"] == "YES"
    assert answer["servicetype"] == "uri://docker-uws"
    assert answer["serviceinfo"] == {"endpoint": "http://example.org/dkuws"}
    assert answer["interfaces"] == []
    # The same answer as the REST route's first offer.
    _, _, rest = call(
        f"{site}/v1/ask", data=json.dumps(SEED).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    first = rest["offers"][0]
    assert (answer["servicetype"], answer["serviceinfo"]) == (
        first["servicetype"],
        first["serviceinfo"],
    )


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (json.dumps(SEED).encode(), "application/json"),
        (b"tasktype: uri://docker-container\ntaskinfo:\n  image: docker.io/example:1.0\n",
         "application/yaml"),
        (b"tasktype: uri://docker-container\ntaskinfo: {image: docker.io/example:1.0}\n",
         "text/yaml"),
        (urllib.parse.urlencode(
            {"tasktype": DOCKER, "taskinfo": '{"image": "docker.io/example:1.0"}'}).encode(),
         "application/x-www-form-urlencoded"),
        (urllib.parse.urlencode(
            {"tasktype": DOCKER, "taskinfo": "image: docker.io/example:1.0"}).encode(),
         "application/x-www-form-urlencoded"),
    ],
    ids=["json", "yaml", "yaml-flow", "form-json", "form-yaml"],
)  # fmt: skip
def test_post_accept_reads_every_form_of_the_question(site, body, kind):
    status, _, answer = call(f"{site}/accept", data=body, headers={"Content-Type": kind})
    assert status == 200, answer
    assert answer["reponseword"] == "YES"
    assert answer["serviceinfo"] == {"endpoint": "http://example.org/dkuws"}


def test_post_accept_reads_a_multipart_form_with_tasktype_and_taskinfo_parts(site):
    body, kind = multipart({"tasktype": DOCKER, "taskinfo": '{"image": "docker.io/example:1.0"}'})
    status, _, answer = call(f"{site}/accept", data=body, headers={"Content-Type": kind})
    assert status == 200, answer
    assert answer["servicetype"] == "uri://docker-uws"


def test_the_seeds_loose_json_reads_as_yaml(site):
    # The seed's example has single quotes and a trailing comma: not JSON,
    # but YAML's flow style reads it.
    body = (
        b'{"tasktype": "uri://complex-kubernetes-deploy", "taskinfo": {'
        b'"config": "http:///github.com/Zarquan/complicated-project", '
        b'"param-one": 270, "param-two": \'curlew\', }}'
    )
    status, _, answer = call(
        f"{site}/accept", data=body, headers={"Content-Type": "application/yaml"}
    )
    assert status == 200, answer
    assert answer["responseword"] == "NO"
    assert answer["reasons"][0]["code"] == "UNSUPPORTED_TASK_TYPE"


def test_a_no_carries_the_reasons(site):
    status, _, answer = call(f"{site}/accepts?tasktype=uri://nobody-here")
    assert status == 200
    assert answer["responseword"] == "NO"
    assert "servicetype" not in answer
    assert answer["reasons"][0]["field"] == "tasktype"


def test_every_offer_is_there_first_on_top_then_the_others(ep_server):
    plugins = {
        "first": Offering("uri://one", "uri://t"),
        "second": Offering("uri://two", "uri://t"),
        "no": Declining("uri://t", reasons=(Reason("NOT_TODAY", "busy", Cause.CAPACITY),)),
    }
    url = ep_server(plugins=plugins, entry_points=False).http_url
    status, _, answer = call(f"{url}/accepts?tasktype=uri://t")
    assert status == 200
    services = [answer["servicetype"]] + [i["servicetype"] for i in answer["interfaces"]]
    assert sorted(services) == ["uri://one", "uri://two"]
    assert [r["code"] for r in answer["reasons"]] == ["NOT_TODAY"]


@pytest.mark.parametrize(
    ("body", "kind", "field"),
    [
        (b"a: &x [1]\nb: *x\n", "application/yaml", ""),
        (b"tasktype: [unclosed\n", "application/yaml", ""),
        (b"- just\n- a list\n", "application/yaml", ""),
        (b"tasktype: uri://docker-container\ntaskinfo: " + b"[" * 5000 + b"]" * 5000,
         "application/yaml", "taskinfo"),
        (b"tasktype: uri://docker-container\ntaskinfo:\n  ? [a, b]\n  : x\n", "application/yaml",
         ""),
        (b"tasktype: uri://docker-container\ntaskinfo: {n: .nan}\n", "application/yaml",
         "taskinfo.n"),
        (b'{"tasktype": 5}', "application/json", "tasktype"),
        (b'{"taskinfo": {}}', "application/json", "tasktype"),
        (urllib.parse.urlencode({"tasktype": DOCKER, "colour": "red"}).encode(),
         "application/x-www-form-urlencoded", "colour"),
        (urllib.parse.urlencode({"tasktype": DOCKER, "taskinfo": "[unclosed"}).encode(),
         "application/x-www-form-urlencoded", "taskinfo"),
        (b"tasktype: uri://docker-container\ntaskinfo: {n: " + b"1" * 5000 + b"}\n",
         "application/yaml", ""),
        (urllib.parse.urlencode({"tasktype": DOCKER, "taskinfo": "{n: " + "1" * 5000 + "}"})
         .encode(), "application/x-www-form-urlencoded", "taskinfo"),
    ],
    ids=["alias", "bad-yaml", "yaml-list", "deep", "list-key", "nan", "wrong-type",
         "no-tasktype", "form-extra", "form-bad-taskinfo", "5000-digits", "form-5000-digits"],
)  # fmt: skip
def test_post_accept_refuses_bad_input_with_400_naming_the_field(site, body, kind, field):
    status, _, error = call(f"{site}/accept", data=body, headers={"Content-Type": kind})
    assert status == 400, error
    assert error["code"] == 3  # INVALID_ARGUMENT
    found = violations(error)
    assert field in found, found


def test_a_multipart_part_with_a_malformed_header_line_gets_400(site):
    body = b"--b\r\n[[-259, 3.7e+277]\r\n\r\nvalue\r\n--b--\r\n"
    kind = "multipart/form-data; boundary=b"
    status, _, error = call(f"{site}/accept", data=body, headers={"Content-Type": kind})
    assert status == 400, error
    assert error["code"] == 3
    assert "part without a name" in error["message"]  # the header line names none


def test_a_yaml_time_stays_text_as_in_json(site):
    body = (
        b"tasktype: uri://docker-container\n"
        b"taskinfo: {image: 'docker.io/example:1.0', when: 2031-03-04T09:00:00Z}\n"
    )
    status, _, answer = call(
        f"{site}/accept", data=body, headers={"Content-Type": "application/yaml"}
    )
    assert status == 200, answer  # a datetime would not have become JSON


def test_a_yaml_base_60_number_stays_text_as_in_json(site):
    # YAML 1.1 reads 1:30 as 90, at a cost quadratic in its length: a
    # body of "1:0:0..." within the size limit held the event loop, and so
    # both doors, for minutes (this one, 200 kB, took seconds to a 400).
    body = b"tasktype: uri://docker-container\ntaskinfo: {image: 'docker.io/example:1.0', at: 1:30,"
    body += b" n: 1" + b":0" * 100_000 + b"}\n"
    status, _, answer = call(
        f"{site}/accept", data=body, headers={"Content-Type": "application/yaml"}
    )
    assert status == 200, answer
    assert "taskinfo.at" in answer["message"]  # text, unknown to the docker plugin


def test_post_accept_refuses_an_unknown_content_type_with_415(site):
    status, _, error = call(
        f"{site}/accept", data=b"tasktype uri://x", headers={"Content-Type": "text/plain"}
    )
    assert status == 415
    assert error["code"] == 3
    assert "multipart/form-data" in error["message"]


def test_post_accept_refuses_query_parameters(site):
    status, _, error = call(
        f"{site}/accept?tasktype=uri://x", data=json.dumps(SEED).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 400
    assert "tasktype" in violations(error)


def test_a_multipart_form_past_the_body_limit_gets_413(ep_server):
    url = ep_server({"http": {"max_body_bytes": 4096}}, allow=["docker"]).http_url
    body, kind = multipart({"tasktype": DOCKER, "taskinfo": json.dumps({"pad": "x" * 10_000})})
    status, _, error = call(f"{url}/accept", data=body, headers={"Content-Type": kind})
    assert status == 413
    assert error["code"] == 8  # RESOURCE_EXHAUSTED


def test_get_accepts_goes_through_the_same_limits_as_ask(ep_server):
    url = ep_server({"limits": {"ask_rate": 0.001, "ask_burst": 1}}, allow=["docker"]).http_url
    assert call(f"{url}/accepts?tasktype={DOCKER}")[0] == 200
    status, headers, error = call(f"{url}/accepts?tasktype={DOCKER}")
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    assert error["code"] == 8
