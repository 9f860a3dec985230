"""Child process: python dbos_child.py DB FLOW INPUT_JSON ID [lease]"""

import asyncio
import json
import sys

import dbos_flows

import runtree
from runtree.stores import SqliteStore


async def main():
    db, flow, inp, rid = sys.argv[1:5]
    lease = float(sys.argv[5]) if len(sys.argv) > 5 else 0.6
    ids = rid.split(",")
    async with SqliteStore(db, lease=lease) as store, runtree.create_scope(store=store) as scope:
        hs = [scope.exec(getattr(dbos_flows, flow), json.loads(inp), id=i) for i in ids]
        res = await asyncio.gather(*hs, return_exceptions=True)
        print(
            json.dumps(
                [r if not isinstance(r, BaseException) else f"{type(r).__name__}: {r}" for r in res]
            )
        )


asyncio.run(main())
