"""asyncpg (Debian's python3-asyncpg) checks for transaction-mode pooling, driven by drivers-asyncpg.test.ts.

Usage: /usr/bin/python3 asyncpg_checks.py CHECK
Connection parameters come from the PG* environment variables (asyncpg reads them). asyncpg always
uses named prepared statements (its statement cache). Prints exactly one JSON object on stdout: the
observations of CHECK, or {"error": {...}} when the driver raised; a timeout becomes such an error too.
"""

import asyncio
import json
import os
import random
import sys
import threading
import traceback

import asyncpg

CHECK_SECONDS = float(os.environ.get("DRIVER_WATCHDOG_SECONDS", "20"))
NOTIFY_WAIT_SECONDS = 8.0

_phase = ["start"]


def error_json(exc):
    return {
        "type": type(exc).__name__,
        "sqlstate": getattr(exc, "sqlstate", None),
        "message": str(exc).strip(),
        "phase": _phase[0],
        "trace": traceback.format_exc(limit=6),
    }


async def connect():
    return await asyncpg.connect(timeout=5, command_timeout=10)


async def noise(stop):
    """A default-settings client running short transactions until `stop`, so servers change hands."""
    conn = await connect()
    try:
        while not stop.is_set():
            async with conn.transaction():
                await conn.execute("select pg_sleep(0.002)")
    finally:
        await conn.close()


# --- pool: concurrent fetch/fetchval with parameters on a pool of 6 ------------------------------------


async def check_pool():
    _phase[0] = "pool: create"
    pool = await asyncpg.create_pool(min_size=4, max_size=6, timeout=5, command_timeout=10)
    observer = await connect()
    mismatches = []
    done = asyncio.Event()

    async def task(k):
        for i in range(25):
            v = await pool.fetchval("select $1::int * 1000 + $2::int", k, i)
            if v != k * 1000 + i:
                mismatches.append(f"task {k} iteration {i}: fetchval {v}")
            m = i % 5 + 1
            rows = await pool.fetch(
                "select g, g * $1::int as m from generate_series(1, $2::int) g order by g", k, m
            )
            if [tuple(r) for r in rows] != [(g, g * k) for g in range(1, m + 1)]:
                mismatches.append(f"task {k} iteration {i}: fetch {[tuple(r) for r in rows]}")
            async with pool.acquire() as c:
                async with c.transaction():
                    await c.execute("insert into apg_items (owner, n) values ($1, $2)", k, i)
                    count = await c.fetchval("select count(*) from apg_items where owner = $1", k)
                if count != i + 1:
                    mismatches.append(f"task {k} iteration {i}: count {count}")
            row = await pool.fetchrow("select $1::text as name, $2::numeric * 2 as twice", f"t{k}", i)
            if (row["name"], int(row["twice"])) != (f"t{k}", 2 * i):
                mismatches.append(f"task {k} iteration {i}: fetchrow {dict(row)}")
            await asyncio.sleep(random.uniform(0, 0.002))

    async def observe():
        pids = []
        while not done.is_set() or len(pids) < 10:
            pids.append(await observer.fetchval("select pg_backend_pid()"))
            await asyncio.sleep(0.003)
        return pids

    _phase[0] = "pool: run"
    watcher = asyncio.create_task(observe())
    try:
        await asyncio.gather(*(task(k) for k in range(12)))
    finally:
        done.set()
    pids = await watcher
    await observer.close()
    await pool.close()
    return {"mismatches": mismatches, "pids": pids}


# --- ddl: a change of result type under cached statements, from autocommit ------------------------------

QUERY = "select * from apg_ddl order by id"


async def check_ddl():
    _phase[0] = "ddl: connect"
    # More clients than servers, each with the statement in its cache, so every server has it prepared.
    conns = [await connect() for _ in range(4)]
    ddl = await connect()
    # asyncpg names statements __asyncpg_stmt_<n>__ with a counter per connection. Client k first
    # prepares k other statements, so the same name means different queries on different clients.
    warm = []
    for k, c in enumerate(conns):
        for j in range(k):
            warm.append(await c.fetchval(f"select $1::int + {j}", 100) == 100 + j)
    steps = {}
    pids = {id(c): [] for c in conns}

    async def run_all(label):
        # asyncpg's prepare() leaves the server inside the implicit transaction of its Parse/Describe
        # (holding the table's lock) until the connection's next query, so it goes first.
        stmt = await conns[0].prepare(QUERY)
        columns = [[a.name, a.type.name] for a in stmt.get_attributes()]

        async def client(c):
            seen = []
            for _ in range(3):
                try:
                    rows = await c.fetch(QUERY)
                    seen.append([list(r.values()) for r in rows])
                except asyncpg.PostgresError as exc:
                    seen.append({"sqlstate": exc.sqlstate, "message": str(exc)})
                pids[id(c)].append(await c.fetchval("select pg_backend_pid()"))
                await asyncio.sleep(random.uniform(0, 0.003))
            return seen

        # The 4 clients at once on 2 servers, so each runs its cached statement on either server.
        per_client = await asyncio.gather(*(client(c) for c in conns))
        steps[label] = {"results": [r for seen in per_client for r in seen], "columns": columns}

    _phase[0] = "ddl: before"
    await run_all("before")
    _phase[0] = "ddl: alter type"
    await ddl.execute("alter table apg_ddl alter column v type bigint")
    await run_all("after_alter_type")
    _phase[0] = "ddl: add column"
    await ddl.execute("alter table apg_ddl add column w text default 'x'")
    await run_all("after_add_column")
    _phase[0] = "ddl: drop column"
    await ddl.execute("alter table apg_ddl drop column w")
    await run_all("after_drop_column")
    for c in [*conns, ddl]:
        await c.close()
    return {"warm_up_ok": all(warm), "steps": steps, "pids": list(pids.values())}


# --- listen: add_listener / remove_listener with other clients in between ------------------------------


async def check_listen():
    stop = asyncio.Event()
    noisy = [asyncio.create_task(noise(stop)) for _ in range(3)]
    try:
        _phase[0] = "listen: connect"
        listener = await connect()
        sender = await connect()
        got = asyncio.Queue()

        def on_notify(_conn, _pid, channel, payload):
            got.put_nowait([channel, payload])

        await listener.add_listener("ticks", on_notify)
        await listener.add_listener("ctl", on_notify)
        pids = []
        for _ in range(8):
            pids.append(await listener.fetchval("select pg_backend_pid()"))
            await asyncio.sleep(0.003)

        async def wait_for_marker(marker):
            received = []
            try:
                async with asyncio.timeout(NOTIFY_WAIT_SECONDS):
                    while True:
                        item = await got.get()
                        if item == ["ctl", marker]:
                            return received, True
                        received.append(item)
            except TimeoutError:
                return received, False

        _phase[0] = "listen: round 1"
        await sender.execute("notify ticks, 'a'")
        tx = sender.transaction()
        await tx.start()
        await sender.execute("notify ticks, 'rolled-back'")
        await tx.rollback()
        await sender.execute("select pg_notify('ticks', 'b')")
        await sender.execute("notify other, 'x'")
        async with sender.transaction():
            await sender.execute("notify ticks, 'c'")
        await sender.execute("notify ctl, 'stop1'")
        round1 = await wait_for_marker("stop1")

        _phase[0] = "listen: round 2"
        for _ in range(8):
            pids.append(await listener.fetchval("select pg_backend_pid()"))
            await asyncio.sleep(0.003)
        await listener.remove_listener("ticks", on_notify)
        await sender.execute("notify ticks, 'after-unlisten'")
        await sender.execute("notify ctl, 'stop2'")
        round2 = await wait_for_marker("stop2")
        await listener.close()
        await sender.close()
        return {
            "round1": {"received": round1[0], "complete": round1[1]},
            "round2": {"received": round2[0], "complete": round2[1]},
            "pids": pids,
        }
    finally:
        stop.set()
        await asyncio.wait(noisy, timeout=5)


CHECKS = {"pool": check_pool, "ddl": check_ddl, "listen": check_listen}


_emitted = threading.Lock()


def emit(result):
    """Prints the one result object and exits; a second caller (watchdog or loop) just stops."""
    if not _emitted.acquire(blocking=False):
        return
    result["driver"] = f"asyncpg {asyncpg.__version__}"
    sys.stdout.write(json.dumps(result, default=str) + "\n")
    sys.stdout.flush()
    # Exit at once: no interpreter or event-loop teardown, which would wait for tasks still blocked on a
    # connection that never answered (cancelling asyncpg queries needs the server to answer too).
    os._exit(0)


def start_watchdog(seconds):
    """Last resort if the event loop itself cannot get to the asyncio timeout."""

    def fire():
        emit({"error": {"type": "Timeout", "message": f"event loop stuck after {seconds} s (phase: {_phase[0]})"}})

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


async def run(check):
    task = asyncio.ensure_future(CHECKS[check]())
    try:
        # Not wait_for: that would wait for the cancelled check to unwind, which can block on the server.
        done, _ = await asyncio.wait([task], timeout=CHECK_SECONDS)
        if not done:
            emit({"error": {"type": "Timeout", "message": f"no result after {CHECK_SECONDS} s (phase: {_phase[0]})"}})
        emit(task.result())
    except Exception as exc:  # noqa: BLE001 - the test asserts on it
        emit({"error": error_json(exc)})


def main():
    start_watchdog(CHECK_SECONDS + 3)
    asyncio.run(run(sys.argv[1]))


if __name__ == "__main__":
    main()
