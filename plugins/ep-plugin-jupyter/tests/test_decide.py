"""The site resolved against the host, and resource fit at and around its limits."""

from __future__ import annotations

from typing import Any

from ep_plugin_jupyter.config import JupyterConfig
from ep_plugin_jupyter.decide import TASKTYPES, Site, decide
from ep_server import Cause, HostInfo, IntRange, Limit, Resources, TaskQuery

GiB = 1024**3
SEED = {"notebook": "https://example.org/notebooks/analysis.ipynb"}


def host(cores: int = 8, memory: int = 16 * GiB) -> HostInfo:
    return HostInfo(cores=cores, memory=memory, architecture="x86_64", os="linux")


def site(on: HostInfo, **config: Any) -> Site:
    """A site with its kernels from the config, so nothing is discovered."""
    return Site.resolve(JupyterConfig.model_validate({"kernels": ["python"], **config}), on)


def test_limits_take_the_tighter_of_host_and_config() -> None:
    limits = site(host(), max_cores=4, max_memory=32 * GiB)
    assert limits.cores == Limit(4, "the per-task limit of cores")
    assert limits.memory == Limit(16 * GiB, "this host's memory")
    assert site(host()).cores == Limit(8, "this host's cores")


def test_unknown_host_memory_leaves_only_the_config_limit() -> None:
    assert site(host(memory=0)).memory.value is None
    assert site(host(memory=0), max_memory=GiB).memory.value == GiB


def test_both_resources_report_together() -> None:
    limits = site(host(cores=4, memory=8 * GiB))
    asked = Resources(IntRange(8, None), IntRange(9 * GiB, None))
    fit = limits.fit(asked)
    assert [r.field for r in fit.reasons] == ["resources.cores.min", "resources.memory.min"]
    assert fit.reasons[1].code == "INSUFFICIENT_MEMORY"


def test_both_resources_capped_with_notes() -> None:
    limits = site(host(cores=4, memory=8 * GiB), max_memory=2 * GiB)
    fit = limits.fit(Resources(IntRange(1, 16), IntRange(GiB, 4 * GiB)))
    assert fit.resources == Resources(IntRange(1, 4), IntRange(GiB, 2 * GiB))
    assert fit.notes == (
        "cores capped at 4 (this host's cores)",
        f"memory capped at {2 * GiB} bytes (the per-task limit of memory)",
    )
    assert fit.reasons == ()


def test_a_refusal_says_what_a_notebook_here_gets() -> None:
    query = TaskQuery(TASKTYPES[0], SEED, Resources(IntRange(5, None)))
    [reason] = decide(query, site(host(cores=4))).reasons
    assert (reason.code, reason.cause) == ("INSUFFICIENT_CORES", Cause.CAPACITY)
    assert reason.message == (
        "asked for at least 5 of cores; a notebook here gets at most 4 (this host's cores)"
    )


def test_a_yes_offers_each_service_with_the_fitted_resources() -> None:
    services = [{"servicetype": "uri://jupyter-hub"}, {"servicetype": "uri://binder-hub"}]
    verdict = decide(TaskQuery(TASKTYPES[1], SEED), site(host(), services=services))
    assert [o.servicetype for o in verdict.offers] == ["uri://jupyter-hub", "uri://binder-hub"]
    assert {o.resources for o in verdict.offers} == {
        Resources(IntRange(None, 8), IntRange(None, 16 * GiB))
    }


def test_each_task_type_is_claimed_with_every_service_type() -> None:
    services = [{"servicetype": "uri://a"}, {"servicetype": "uri://b"}, {"servicetype": "uri://a"}]
    claims = site(host(), services=services).claims()
    assert [(c.tasktype, c.servicetypes) for c in claims] == [
        (tasktype, ("uri://a", "uri://b")) for tasktype in TASKTYPES
    ]


def test_fields_it_does_not_read_are_named_on_the_offer_not_refused() -> None:
    taskinfo = {
        "notebook": {"location": SEED["notebook"], "kernal": "python"},
        "languages": ["python"],
        "gpus": 1,
    }
    verdict = decide(TaskQuery(TASKTYPES[0], taskinfo), site(host()))
    [offer] = verdict.offers
    assert offer.message == (
        "ignored taskinfo fields this site does not know: taskinfo.gpus,"
        " taskinfo.notebook.kernal (did you mean kernel?)"
    )


def test_an_offer_for_a_taskinfo_it_reads_wholly_has_no_note() -> None:
    verdict = decide(TaskQuery(TASKTYPES[0], {**SEED, "kernel": "python"}), site(host()))
    assert [o.message for o in verdict.offers] == [""]


def test_a_requirements_file_is_read_at_the_top_and_in_the_notebook_object() -> None:
    for taskinfo in (
        {**SEED, "requirements": "https://example.org/notebooks/requirements.txt"},
        {"notebook": {"location": SEED["notebook"], "requirements": "requirements.txt"}},
    ):
        verdict = decide(TaskQuery(TASKTYPES[0], taskinfo), site(host()))
        assert verdict.offers
        assert all("ignored" not in offer.message for offer in verdict.offers)


def test_a_requirements_file_that_is_not_a_url_or_relative_path_is_refused() -> None:
    for bad, field in (
        ({**SEED, "requirements": 7}, "taskinfo.requirements"),
        ({**SEED, "requirements": " "}, "taskinfo.requirements"),
        ({"notebook": {"location": SEED["notebook"], "requirements": "ftp://x/r.txt"}},
         "taskinfo.notebook.requirements"),
        ({**SEED, "requirements": "http://[::1/requirements.txt"}, "taskinfo.requirements"),
    ):  # fmt: skip
        [reason] = decide(TaskQuery(TASKTYPES[0], bad), site(host())).reasons
        assert (reason.code, reason.field, reason.cause) == (
            "INVALID_REQUIREMENTS",
            field,
            Cause.REQUEST,
        )
