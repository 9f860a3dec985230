"""lite scope.test.ts: 'closes the context and notifies attached extensions when initContext throws'
(boundary variant; runtree opens a create_context boundary at its first work)."""

import pytest

import runtree as rt

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(10)]


async def test_open_hook_fails_on_boundary():
    events = []

    class Obs(rt.Extension):
        def on_context_open(self, ctx):
            events.append(f"open:{ctx.details.name}")

        def on_context_close(self, ctx):
            events.append(f"close:{ctx.details.name}:{ctx.details.status}")

    class Boom(Exception):
        pass

    class Failing(rt.Extension):
        def on_context_open(self, ctx):
            if ctx.parent is None:
                raise Boom("root init failed")

    ran = []
    async with rt.create_scope(extensions=[Obs(), Failing()]) as scope:
        b = scope.create_context(name="b")
        with pytest.raises(Boom):
            await b.exec(rt.flow(lambda c: ran.append(1), name="child"))
        await b.close()
    assert ran == []
    # each context reported to open once and close once, open before close
    assert events.count("open:b") == 1
    assert sum(1 for e in events if e.startswith("close:b")) == 1
    print(events)
