"""Memory probe for the proxy process, for ``bench.memory_bench`` only (never shipped, never imported by Ralex).

Python imports ``sitecustomize`` at start when this directory is on ``PYTHONPATH``. It does nothing unless
``RALEX_MEMPROBE_DIR`` is set; then a daemon thread writes, every ``RALEX_MEMPROBE_SECONDS``:

* ``counts-<n>.json``: live objects by type (``gc.get_objects``, gc-tracked containers only), the lengths
  of a few LiteLLM and Ralex structures suspected of growing, the number of asyncio tasks, every
  container holding over ``RALEX_MEMPROBE_BIG`` items (by id, with what refers to it: the same id
  growing from record to record is the leak) and every ``functools.lru_cache`` over 100 entries;
* ``trace-<n>.snap``: a tracemalloc snapshot, when ``RALEX_MEMPROBE_TRACEMALLOC`` names a number of
  frames: tracing starts after the first interval (the proxy has started: tracing LiteLLM's imports
  would take minutes), so the snapshots hold what was allocated since and is still alive.
"""

from __future__ import annotations

import os

_DIR = os.environ.get("RALEX_MEMPROBE_DIR")


def _lengths() -> dict[str, int]:
    import sys

    out: dict[str, int] = {}
    litellm = sys.modules.get("litellm")
    if litellm is not None:
        for name in ("callbacks", "success_callback", "failure_callback", "_async_success_callback",
                     "_async_failure_callback", "service_callback", "input_callback", "logging_callback_manager"):
            value = getattr(litellm, name, None)
            if isinstance(value, list | dict | set):
                out[f"litellm.{name}"] = len(value)
        cache = getattr(litellm, "in_memory_llm_clients_cache", None)
        if cache is not None and hasattr(cache, "cache_dict"):
            out["litellm.in_memory_llm_clients_cache"] = len(cache.cache_dict)
    server = sys.modules.get("litellm.proxy.proxy_server")
    if server is not None:
        for name in ("user_api_key_cache", "redis_usage_cache", "llm_router", "proxy_logging_obj"):
            obj = getattr(server, name, None)
            if obj is None:
                continue
            if name == "llm_router":
                for attr in ("cache", "model_id_to_deployment_index_map"):
                    sub = getattr(obj, attr, None)
                    if sub is not None and hasattr(sub, "in_memory_cache"):
                        out[f"router.{attr}.in_memory"] = len(sub.in_memory_cache.cache_dict)
                    elif isinstance(sub, dict):
                        out[f"router.{attr}"] = len(sub)
            elif hasattr(obj, "in_memory_cache"):
                out[f"{name}.in_memory"] = len(obj.in_memory_cache.cache_dict)
            elif hasattr(obj, "cache_dict"):
                out[f"{name}.cache_dict"] = len(obj.cache_dict)
            if name == "proxy_logging_obj":
                cache = getattr(obj, "internal_usage_cache", None)
                dual = getattr(cache, "dual_cache", None)
                if dual is not None:
                    out["proxy_logging_obj.internal_usage_cache"] = len(dual.in_memory_cache.cache_dict)
    engine_mod = sys.modules.get("ralex.proxy.runtime")
    engine = getattr(getattr(engine_mod, "runtime", None), "engine", None)
    if engine is not None:
        out["ralex.turns"] = len(engine.turns._entries)
        out["ralex.prefixes"] = len(engine.prefixes)
        out["ralex.in_flight"] = len(engine.in_flight)
        out["ralex.events"] = len(engine.events)
        out["ralex.book.holds"] = len(getattr(engine.book, "_holds", getattr(engine.book, "holds", ())) or ())
        out["ralex.runtime.tasks"] = len(engine_mod.runtime._tasks)
    return out


def _owner(obj: object, gc: object, objects_ids: set[int]) -> str:
    """Where a container lives: the attribute or module global that holds it, as best found."""
    import sys
    import types

    for ref in gc.get_referrers(obj):  # type: ignore[attr-defined]
        if id(ref) not in objects_ids or not isinstance(ref, dict):
            continue
        name = next((k for k, v in ref.items() if v is obj), None)
        if name is None:
            continue
        for mod in list(sys.modules.values()):
            if isinstance(mod, types.ModuleType) and getattr(mod, "__dict__", None) is ref:
                return f"{mod.__name__}.{name}"
        for holder in gc.get_referrers(ref):  # type: ignore[attr-defined]
            if getattr(holder, "__dict__", None) is ref:
                return f"{type(holder).__module__}.{type(holder).__qualname__}().{name}"
        return f"dict[{name!r}]"
    return "?"


def _big(objects: list[object], gc: object, least: int) -> list[dict[str, object]]:
    import collections
    import functools

    out: list[dict[str, object]] = []
    ids = {id(o) for o in objects if isinstance(o, dict)}
    for o in objects:
        if isinstance(o, dict | list | set | collections.deque | collections.OrderedDict):
            try:
                n = len(o)
            except Exception:
                continue
            if n >= least:
                out.append({"id": id(o), "type": type(o).__qualname__, "len": n, "owner": _owner(o, gc, ids)})
        elif isinstance(o, functools._lru_cache_wrapper):
            info = o.cache_info()
            if info.currsize >= 100:
                out.append({"id": id(o), "type": "lru_cache", "len": info.currsize,
                            "owner": f"{getattr(o, '__module__', '?')}.{getattr(o, '__qualname__', '?')}"})
    return out


def _describe(obj: object) -> str:
    if isinstance(obj, dict):
        return f"dict keys={list(obj)[:8]}"
    if isinstance(obj, list | tuple | set):
        return f"{type(obj).__qualname__} len={len(obj)}"
    if type(obj).__name__ == "frame":
        return f"frame {obj.f_code.co_filename}:{obj.f_lineno} {obj.f_code.co_name}"  # type: ignore[attr-defined]
    if type(obj).__name__ == "cell":
        return "cell"
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _chains(objects: list[object], gc: object, key: str, depth: int = 8) -> dict[str, object]:
    """Live dicts that have ``key`` (one made per request, e.g. LiteLLM's user-key metadata), and the
    referrer chain of the oldest few: what keeps them alive."""
    found = [o for o in objects if isinstance(o, dict) and key in o]
    chains = []
    seen = {id(objects), id(found)}
    for start in found[:3]:
        chain: list[str] = []
        current = start
        for _ in range(depth):
            refs = [r for r in gc.get_referrers(current)  # type: ignore[attr-defined]
                    if id(r) not in seen and r is not chain and r is not found
                    and getattr(getattr(r, "f_code", None), "co_filename", None) != __file__]
            if not refs:
                break
            seen.add(id(refs))
            current = refs[0]
            seen.add(id(current))
            chain.append(f"{_describe(current)} (+{len(refs) - 1} other referrers)")
        chains.append(chain)
    return {"count": len(found), "chains": chains}


def _backref_chain(objects: list[object], gc: object, type_name: str, limit: int = 200_000) -> dict[str, object]:
    """How many live ``type_name`` objects there are, and the shortest chain of references from a module
    (or, failing that, from an object nothing tracked refers to: a running frame, a C-level root) to the
    oldest of them: what keeps it alive. One reverse graph of the tracked heap, then a breadth-first walk."""
    import collections
    import types

    found = [o for o in objects if f"{type(o).__module__}.{type(o).__qualname__}" == type_name]
    if not found:
        return {"count": 0}
    index = {id(o): o for o in objects}
    referrers: dict[int, list[int]] = {}
    for o in objects:
        for r in gc.get_referents(o):  # type: ignore[attr-defined]
            if id(r) in index:
                referrers.setdefault(id(r), []).append(id(o))
    start = id(found[0])
    parent: dict[int, int | None] = {start: None}
    queue, end, n = collections.deque([start]), None, 0
    while queue and n < limit:
        current = queue.popleft()
        n += 1
        obj = index[current]
        if isinstance(obj, types.ModuleType) or not referrers.get(current):
            end = current
            if isinstance(obj, types.ModuleType):
                break
            continue
        for source in referrers[current]:
            if source not in parent:
                parent[source] = current
                queue.append(source)
    chain = []
    while end is not None:
        obj = index[end]
        chain.append(getattr(obj, "__name__", "?") if isinstance(obj, types.ModuleType) else _describe(obj))
        end = parent[end]
    return {"count": len(found), "chain_from_root": chain, "visited": n}


def _holders(objects: list[object], gc: object, lines: list[str], top: int = 12) -> dict[str, object]:
    """With tracemalloc on: which containers hold objects allocated at ``lines`` ("file.py:123", the
    innermost frame), counted by the container's own allocation site and type."""
    import collections
    import tracemalloc

    if not tracemalloc.is_tracing() or not lines:
        return {}
    wanted = set(lines)

    def site(obj: object) -> str | None:
        tb = tracemalloc.get_object_traceback(obj)
        if tb is None:
            return None
        frame = tb[0]
        return f"{os.path.basename(frame.filename)}:{frame.lineno}"

    found: dict[str, collections.Counter[str]] = {line: collections.Counter() for line in lines}
    for container in objects:
        if isinstance(container, dict):
            items = list(container.values()) + list(container.keys())
        elif isinstance(container, list | tuple | set | frozenset | collections.deque):
            items = list(container)
        else:
            continue
        for item in items:
            where = site(item) if isinstance(item, dict | tuple | list | str | bytes) else None
            if where in wanted:
                holder = f"{type(container).__qualname__} made at {site(container)}"
                found[where][holder] += 1  # type: ignore[index]
    return {line: dict(counter.most_common(top)) for line, counter in found.items()}


def _probe(directory: str, every: float) -> None:
    import gc
    import json
    import sys
    import time
    import tracemalloc
    from collections import Counter

    frames = int(os.environ.get("RALEX_MEMPROBE_TRACEMALLOC", "0"))
    n = 0
    while True:
        time.sleep(every)
        if frames and not tracemalloc.is_tracing():
            tracemalloc.start(frames)
        n += 1
        started = time.monotonic()
        try:
            objects = gc.get_objects()
            counts = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objects)
            tasks = counts.get("_asyncio.Task", 0)
            big = _big(objects, gc, int(os.environ.get("RALEX_MEMPROBE_BIG", "200")))
            keyed = {k: _chains(objects, gc, k) for k in os.environ.get("RALEX_MEMPROBE_KEYS", "").split(",") if k}
            holders = _holders(objects, gc, [x for x in os.environ.get("RALEX_MEMPROBE_LINES", "").split(",") if x])
            held = {t: _backref_chain(objects, gc, t)
                    for t in os.environ.get("RALEX_MEMPROBE_TYPES", "").split(",") if t}
            del objects
            record = {"n": n, "t": time.time(), "objects": sum(counts.values()), "tasks": tasks,
                      "gc_counts": gc.get_count(), "gc_stats": gc.get_stats(),
                      "gc_frozen": gc.get_freeze_count(), "lengths": _lengths(),
                      "types": dict(counts.most_common(400)), "big": big,
                      "keyed": keyed, "held": held, "holders": holders}
            linecache = sys.modules.get("linecache")
            if linecache is not None:
                record["lengths"]["linecache.cache"] = len(linecache.cache)
            if tracemalloc.is_tracing():
                snapshot = tracemalloc.take_snapshot()
                snapshot.dump(os.path.join(directory, f"trace-{n}.snap"))
                record["traced_mib"] = tracemalloc.get_traced_memory()[0] / 2**20
            record["probe_seconds"] = time.monotonic() - started
            with open(os.path.join(directory, f"counts-{n}.json"), "w") as f:
                json.dump(record, f)
        except Exception as exc:  # a probe must never take the proxy down
            with open(os.path.join(directory, "errors.txt"), "a") as f:
                f.write(f"{n}: {exc!r}\n")


def _cap_turns(limit: int) -> None:
    """An experiment, not a fix: cap the engine's turn memory (``TurnMemory``, 10,000 entries) once the
    runtime has started, to see how much of the growth it is."""
    import sys
    import time

    while True:
        time.sleep(0.5)
        runtime = getattr(sys.modules.get("ralex.proxy.runtime"), "runtime", None)
        engine = getattr(runtime, "engine", None)
        if engine is not None:
            engine.turns._max = limit
            return


if os.environ.get("RALEX_MEMPROBE_TURNS_MAX"):
    import threading

    threading.Thread(target=_cap_turns, args=(int(os.environ["RALEX_MEMPROBE_TURNS_MAX"]),), daemon=True,
                     name="ralex-memprobe-turns").start()

if _DIR:
    import threading

    os.makedirs(_DIR, exist_ok=True)
    threading.Thread(target=_probe, args=(_DIR, float(os.environ.get("RALEX_MEMPROBE_SECONDS", "120"))),
                     daemon=True, name="ralex-memprobe").start()
