"""Child process: python dbos_recoverer.py DB -> recovers orphaned runs, prints their results."""

import asyncio
import json
import sys

import dbos_flows

import runtree
from runtree.stores import SqliteStore

FLOWS = [
    dbos_flows.rec_wf,
    dbos_flows.in_step_wf,
    dbos_flows.slow_step_wf,
    dbos_flows.long_wf,
    dbos_flows.retry_crash_wf,
]


async def main():
    async with (
        SqliteStore(sys.argv[1], lease=0.6) as store,
        runtree.create_scope(store=store) as scope,
    ):
        hs = await scope.recover(FLOWS)
        res = await asyncio.gather(*hs, return_exceptions=True)
        print(
            json.dumps(
                {
                    h.id: (r if not isinstance(r, BaseException) else repr(r))
                    for h, r in zip(hs, res)
                }
            )
        )


asyncio.run(main())
