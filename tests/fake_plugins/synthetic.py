"""Twenty synthetic plugins for the benchmark: each claims a few task types,
four of them claim ``uri://bench-task``. Load them with
``plugins.modules = ["synthetic00=fake_plugins.synthetic:P00", ...]``
(see :data:`MODULE_SPECS`)."""

from __future__ import annotations

from ep_server import Cause, Claim, HostInfo, Offer, Reason, Resources, TaskQuery, Verdict, hookimpl

ASKED = "uri://bench-task"
COUNT = 20


class Synthetic:
    """Claims ``uri://synthetic-<i>-<k>`` for k in 0..2, plus the asked task
    type when ``i % 5 == 0``; offers when the requested cores fit."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.tasktypes = [f"uri://synthetic-{index}-{k}" for k in range(3)]
        if index % 5 == 0:
            self.tasktypes.append(ASKED)
        self.servicetype = f"uri://synthetic-service-{index}"

    @hookimpl
    def ep_claims(self) -> list[Claim]:
        return [Claim(t, (self.servicetype,)) for t in self.tasktypes]

    @hookimpl
    async def ep_evaluate(self, query: TaskQuery, host: HostInfo) -> Verdict:
        wanted = query.resources.cores.min or 1
        if wanted > host.cores:
            why = f"asked for {wanted} cores, host has {host.cores}"
            return Verdict.no(Reason("INSUFFICIENT_CORES", why, Cause.CAPACITY))
        image = query.taskinfo.get("image", "")
        return Verdict.yes(
            Offer(
                self.servicetype,
                {"endpoint": f"http://127.0.0.1:{9000 + self.index}/run", "image": image},
                Resources(query.resources.cores, query.resources.memory),
            )
        )


for _i in range(COUNT):
    globals()[f"P{_i:02d}"] = Synthetic(_i)

MODULE_SPECS = [f"synthetic{i:02d}=fake_plugins.synthetic:P{i:02d}" for i in range(COUNT)]
