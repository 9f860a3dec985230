"""Tags: typed ambient values, nearest wins."""

from __future__ import annotations

import pytest

import runtree as rt
from runtree import MissingTagError, ParseError, SerializationError, tag, tags

tenant = tag("tenant")
region = tag("region", default="eu")
retries = tag("retries", parse=int)
payload = tag("payload", serializable=True)


@rt.flow
async def read_tenant(ctx: rt.ExecutionContext) -> object:
    return ctx.get(tenant)


class TestBinding:
    def test_binding_makes_a_tagged_value(self) -> None:
        bound = tenant("acme")
        assert bound.tag is tenant
        assert bound.value == "acme"

    def test_parse_coerces_bound_values(self) -> None:
        assert retries("3").value == 3

    def test_parse_failure_is_a_parse_error_naming_the_tag(self) -> None:
        with pytest.raises(ParseError) as info:
            retries("three")
        assert info.value.name == "retries"
        assert "retries" in str(info.value)
        assert isinstance(info.value.__cause__, ValueError)

    def test_serializable_tags_accept_json_only(self) -> None:
        assert payload({"a": [1, 2.5, None, True]}).value == {"a": [1, 2.5, None, True]}
        with pytest.raises(SerializationError, match=r"^Value of serializable tag 'payload'"):
            payload({"a": object()})
        with pytest.raises(SerializationError):
            payload({1: "int key"})
        with pytest.raises(SerializationError):
            payload(float("nan"))

    def test_label_must_be_a_non_empty_string(self) -> None:
        with pytest.raises(TypeError):
            tag("")


class TestPrecedence:
    async def test_nearest_wins_exec_over_context_over_scope_over_default(self) -> None:
        async with rt.create_scope(tags=[region("scope")]) as scope:
            ctx = scope.create_context(tags=[region("context")])
            seen: dict[str, object] = {}

            @rt.flow
            async def probe(c: rt.ExecutionContext) -> None:
                seen["exec"] = c.get(region)
                c.set(region, "own")
                seen["own"] = c.get(region)

            await ctx.exec(probe, tags=[region("exec-call")])
            assert seen == {"exec": "exec-call", "own": "own"}
            assert ctx.get(region) == "context"
            plain = scope.create_context()
            assert plain.get(region) == "scope"
        async with rt.create_scope() as scope:
            assert scope.create_context().get(region) == "eu"

    async def test_children_inherit_and_parents_do_not_see_child_sets(self) -> None:
        async with rt.create_scope() as scope:
            root = scope.create_context(tags=[tenant("acme")])

            @rt.flow
            async def child(c: rt.ExecutionContext) -> object:
                inherited = c.get(tenant)
                c.set(tenant, "child-only")
                grandchild_sees = await c.exec(read_tenant)
                return inherited, grandchild_sees

            assert await root.exec(child) == ("acme", "child-only")
            assert root.get(tenant) == "acme"

    async def test_missing_tag_error_names_the_tag_and_how_to_bind_it(self) -> None:
        async with rt.create_scope() as scope:
            ctx = scope.create_context()
            with pytest.raises(MissingTagError) as info:
                ctx.get(tenant)
            message = str(info.value)
            assert "'tenant'" in message
            assert "create_scope(tags=" in message
            assert ctx.find(tenant) is None
            with pytest.raises(MissingTagError):
                await ctx.exec(read_tenant)

    async def test_set_runs_parse(self) -> None:
        async with rt.create_scope() as scope:
            ctx = scope.create_context()
            ctx.set(retries, "5")
            assert ctx.get(retries) == 5
            with pytest.raises(ParseError):
                ctx.set(retries, "x")
            assert ctx.get(retries) == 5

    async def test_deep_boundary_chain_reads_tag_from_the_top(self) -> None:
        async with rt.create_scope() as scope:
            top = scope.create_context(tags=[tenant("deep")])
            ctx = top
            for _ in range(1000):
                ctx = scope.create_context(parent=ctx)
            assert await ctx.exec(read_tenant) == "deep"
            await top.close()
            assert ctx.closed


class TestTagDependencies:
    async def test_required_optional_all(self) -> None:
        got: dict[str, object] = {}

        @rt.flow(
            deps={
                "t": tags.required(tenant),
                "maybe": tags.optional(retries),
                "every": tags.all(region),
                "bare": tenant,
            }
        )
        async def uses(
            ctx: rt.ExecutionContext, t: object, maybe: object, every: object, bare: object
        ) -> None:
            got.update(t=t, maybe=maybe, every=every, bare=bare)

        async with rt.create_scope(tags=[region("scope")]) as scope:
            ctx = scope.create_context(tags=[tenant("acme"), region("root")])
            await ctx.exec(uses, tags=[region("call")])
        assert got == {
            "t": "acme",
            "maybe": None,
            "every": ["call", "root", "scope"],
            "bare": "acme",
        }

    async def test_all_lists_one_value_per_context_as_of_creation(self) -> None:
        async with rt.create_scope(tags=[region("scope")]) as scope:
            root = scope.create_context(tags=[region("root")])
            root.set(region, "root-again")  # replaces root's own value
            nested = scope.create_context(parent=root)
            root.set(region, "later")  # nested keeps its snapshot
            assert root.get_all(region) == ["later", "scope"]
            assert nested.get_all(region) == ["root-again", "scope"]
            assert nested.get(region) == "root-again"
            await root.close()

    async def test_all_excludes_the_default(self) -> None:
        async with rt.create_scope() as scope:
            assert scope.create_context().get_all(region) == []

    async def test_atom_tag_dependencies_read_scope_tags(self) -> None:
        @rt.atom(deps={"t": tags.required(tenant), "r": tags.optional(retries)})
        def settings(ctx: rt.ResolveContext, t: object, r: object) -> tuple[object, object]:
            return (t, r)

        async with rt.create_scope(tags=[tenant("scope-tenant")]) as scope:
            assert await scope.resolve(settings) == ("scope-tenant", None)
        async with rt.create_scope() as scope:
            with pytest.raises(MissingTagError):
                await scope.resolve(settings)
