"""psycopg 3 (Debian's python3-psycopg) checks for transaction-mode pooling, driven by drivers-psycopg.test.ts.

Usage: /usr/bin/python3 psycopg_checks.py CHECK [ARG]
Connection parameters come from the PG* environment variables (libpq reads them). Prints exactly one
JSON object on stdout: the observations of CHECK, or {"error": {...}} when the driver raised. A watchdog
prints a timeout error and exits if the check has not finished after WATCHDOG_SECONDS, so the calling
test never waits on a stuck connection.
"""

import json
import os
import queue
import random
import sys
import threading
import time
import traceback

import psycopg

WATCHDOG_SECONDS = float(os.environ.get("DRIVER_WATCHDOG_SECONDS", "20"))
NOTIFY_WAIT_SECONDS = 8.0

_phase = ["start"]
_emitted = threading.Lock()


def emit(obj):
    """Prints the one result object; later calls (watchdog after the result, or vice versa) are no-ops."""
    if _emitted.acquire(blocking=False):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()
        return True
    return False


def start_watchdog():
    def fire():
        emit({"error": {"type": "Timeout", "message": f"no result after {WATCHDOG_SECONDS} s (phase: {_phase[0]})"}})
        os._exit(0)

    t = threading.Timer(WATCHDOG_SECONDS, fire)
    t.daemon = True
    t.start()


def error_json(exc):
    return {
        "type": type(exc).__name__,
        "sqlstate": getattr(exc, "sqlstate", None),
        "message": str(exc).strip(),
        "phase": _phase[0],
        "trace": traceback.format_exc(limit=6),
    }


def connect(prepare_threshold=None, **kwargs):
    # autocommit: the client decides where transactions are (explicit conn.transaction() blocks), as an
    # autocommit bot would. prepare_threshold=0: every statement becomes a named server-side statement;
    # None (the default here): none does, for checks about something else.
    return psycopg.connect(autocommit=True, connect_timeout=5, prepare_threshold=prepare_threshold, **kwargs)


def run_threads(fns, barrier=None):
    """Runs each fn in a thread; returns their results, re-raising the first exception. A failing
    thread breaks `barrier` so that the others stop waiting for it."""
    results = [None] * len(fns)
    errors = []

    def wrap(i, fn):
        try:
            results[i] = fn()
        except threading.BrokenBarrierError as exc:
            errors.append(exc)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            errors.insert(0, exc)
            if barrier:
                barrier.abort()

    threads = [threading.Thread(target=wrap, args=(i, fn), daemon=True) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def noise_loop(stop):
    """A default-settings connection running short transactions until `stop`, so servers change hands."""

    def run():
        conn = connect()
        n = 0
        while not stop.is_set():
            with conn.transaction():
                conn.execute("select pg_sleep(0.002)")
            n += 1
        conn.close()
        return n

    return run


# --- prepared: named statements across many executions on 6 connections -------------------------------


def check_prepared():
    n_conns, n_iter = 6, 30
    barrier = threading.Barrier(n_conns, timeout=10)

    def worker(k):
        def run():
            conn = connect(prepare_threshold=0)
            mismatches = []
            pids = []
            total = 0
            # psycopg names statements _pg3_<n> with a counter per connection. Client k first prepares
            # k other statements, so the same name means different queries on different clients.
            for j in range(k):
                (w,) = conn.execute(f"select %s::int + {j}", (100,)).fetchone()
                if w != 100 + j:
                    mismatches.append(f"warm-up {j}: {w}")
            barrier.wait()
            for i in range(n_iter):
                in_tx = i % 3 == 2
                tx = conn.transaction() if in_tx else None
                if tx:
                    tx.__enter__()
                v, pid = conn.execute("select %s::int * 1000 + %s::int, pg_backend_pid()", (k, i)).fetchone()
                if v != k * 1000 + i:
                    mismatches.append(f"iteration {i}: computed {v}, expected {k * 1000 + i}")
                pids.append(pid)
                (n,) = conn.execute(
                    "insert into prep_items (owner, n) values (%s, %s) returning n", (k, i)
                ).fetchone()
                if n != i:
                    mismatches.append(f"iteration {i}: insert returned {n}")
                total += i
                count, s = conn.execute(
                    "select count(*), coalesce(sum(n), 0) from prep_items where owner = %s", (k,)
                ).fetchone()
                if (count, s) != (i + 1, total):
                    mismatches.append(f"iteration {i}: count/sum {(count, s)}, expected {(i + 1, total)}")
                if tx:
                    (same,) = conn.execute("select pg_backend_pid()").fetchone()
                    if same != pid:
                        mismatches.append(f"iteration {i}: server changed inside a transaction")
                    tx.__exit__(None, None, None)
                time.sleep(random.uniform(0, 0.003))
            prepared = len(conn._prepared._names) - k
            conn.close()
            return {"conn": k, "mismatches": mismatches, "pids": pids, "prepared": prepared}

        return run

    _phase[0] = "prepared"
    return {"conns": run_threads([worker(k) for k in range(n_conns)], barrier)}


# --- pipeline: batches of inserts and selects in pipeline mode --------------------------------------------


def check_pipeline():
    def worker(k):
        def run():
            conn = connect(prepare_threshold=0)
            base = k * 10000
            with conn.pipeline():
                for i in range(40):
                    conn.execute("insert into pipe_items (owner, n) values (%s, %s)", (k, base + i))
                counted = conn.execute(
                    "select count(*), sum(n - %s) from pipe_items where owner = %s", (base, k)
                )
                with conn.cursor() as cur:
                    cur.executemany(
                        "insert into pipe_items (owner, n) values (%s, %s)",
                        [(k, base + 100 + i) for i in range(20)],
                    )
                after_many = conn.execute("select count(*) from pipe_items where owner = %s", (k,))
                echo = conn.execute("select %s::text || '-' || %s::text", (f"c{k}", "ok"))
            first = counted.fetchone()
            second = after_many.fetchone()[0]
            echoed = echo.fetchone()[0]

            # A transaction block inside a pipeline: committed as a whole.
            with conn.pipeline():
                with conn.transaction():
                    conn.execute("insert into pipe_items (owner, n) values (%s, %s)", (k, base + 1000))
                    in_tx = conn.execute("select count(*) from pipe_items where owner = %s", (k,))
            in_tx_count = in_tx.fetchone()[0]

            # An error in the middle of a pipeline: PostgreSQL discards up to the Sync, the
            # connection stays usable, and the statements around the error are not committed.
            error = None
            try:
                with conn.pipeline():
                    conn.execute("insert into pipe_items (owner, n) values (%s, %s)", (k, base + 2000))
                    conn.execute("select 1 / (%s::int - %s::int)", (k, k))
                    conn.execute("insert into pipe_items (owner, n) values (%s, %s)", (k, base + 2001))
            except psycopg.Error as exc:
                error = exc.sqlstate
            (failed_rows,) = conn.execute(
                "select count(*) from pipe_items where owner = %s and n >= %s", (k, base + 2000)
            ).fetchone()
            (final,) = conn.execute("select count(*) from pipe_items where owner = %s", (k,)).fetchone()
            conn.close()
            return {
                "conn": k,
                "count_sum_after_40": list(first),
                "count_after_executemany": second,
                "echo": echoed,
                "count_in_transaction": in_tx_count,
                "error_sqlstate": error,
                "rows_from_failed_pipeline": failed_rows,
                "final_count": final,
            }

        return run

    _phase[0] = "pipeline"
    stop = threading.Event()
    noise = [threading.Thread(target=noise_loop(stop), daemon=True) for _ in range(2)]
    for t in noise:
        t.start()
    try:
        return {"conns": run_threads([worker(k) for k in range(4)])}
    finally:
        stop.set()
        for t in noise:
            t.join(5)


# --- settings: per-connection TimeZone and search_path, from SET and from startup options ---------------

HOUR_SQL = "select to_char(timestamptz '2024-01-01 00:00:00+00', 'HH24:MI')"


def check_settings():
    # name -> (how to connect, SET statements); the test knows what each should then see.
    specs = {
        "a": ({}, ["set TimeZone to 'Asia/Tokyo'", "set search_path to sa"]),
        "b": ({}, ["set TimeZone to 'America/New_York'", "set search_path to sb"]),
        "c": ({"options": "-c TimeZone=Europe/Berlin -c search_path=sc"}, []),
        "n1": ({}, []),
        "n2": ({}, []),
        "n3": ({}, []),
    }
    barrier = threading.Barrier(len(specs), timeout=10)
    rounds = 15

    def observe(conn):
        (tz,) = conn.execute("show timezone").fetchone()
        (label,) = conn.execute("select label from whoami").fetchone()
        (hour,) = conn.execute(HOUR_SQL).fetchone()
        (pid,) = conn.execute("select pg_backend_pid()").fetchone()
        return {"tz": tz, "label": label, "hour": hour}, pid

    def worker(name):
        kwargs, sets = specs[name]

        def run():
            conn = connect(**kwargs)
            for stmt in sets:
                conn.execute(stmt)
            barrier.wait()
            seen = []
            pids = []
            for r in range(rounds):
                if r % 2:
                    with conn.transaction():
                        got, pid = observe(conn)
                else:
                    got, pid = observe(conn)
                seen.append(got)
                pids.append(pid)
                time.sleep(random.uniform(0, 0.004))
            barrier.wait()
            # RESET: `a` drops its search_path, `b` and `c` reset everything. RESET ALL goes back to the
            # session defaults, which for `c` are its startup options.
            if name == "a":
                conn.execute("reset search_path")
            elif name in ("b", "c"):
                conn.execute("reset all")
            barrier.wait()
            after_reset = []
            for r in range(5):
                got, pid = observe(conn)
                after_reset.append(got)
                pids.append(pid)
                time.sleep(random.uniform(0, 0.004))
            conn.close()
            return {"name": name, "seen": seen, "after_reset": after_reset, "pids": pids}

        return run

    _phase[0] = "settings"
    return {"conns": run_threads([worker(n) for n in specs], barrier)}


# --- listen: LISTEN on two connections, NOTIFY from a third, with other clients in between -------------


class Collector:
    """Reads conn.notifies() in a thread until NOTIFY ctl, '<stop>' arrives; the caller waits with a timeout."""

    def __init__(self, conn, stop_payload):
        self.items = queue.Queue()
        self.stop_payload = stop_payload
        self.thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
        self.thread.start()

    def _run(self, conn):
        try:
            for n in conn.notifies():
                self.items.put((n.channel, n.payload))
                if n.channel == "ctl" and n.payload == self.stop_payload:
                    break
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            self.items.put(("<error>", repr(exc)))

    def wait(self, deadline):
        """Returns (notifications before the stop marker, whether the marker arrived by `deadline`)."""
        got = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got, False
            try:
                item = self.items.get(timeout=left)
            except queue.Empty:
                return got, False
            if item == ("ctl", self.stop_payload):
                self.thread.join(2)
                return got, True
            got.append(list(item))


def check_listen():
    stop = threading.Event()
    noise = [threading.Thread(target=noise_loop(stop), daemon=True) for _ in range(3)]
    for t in noise:
        t.start()
    try:
        _phase[0] = "listen: connect"
        l1 = connect()
        l2 = connect()
        sender = connect()
        for conn in (l1, l2):
            conn.execute("listen ticks")
            conn.execute("listen ctl")
        pids = []
        for _ in range(8):
            pids.append(l1.execute("select pg_backend_pid()").fetchone()[0])
            time.sleep(0.003)

        def send_round_one():
            sender.execute("notify ticks, 'a'")
            with sender.transaction():
                sender.execute("notify ticks, 'rolled-back'")
                raise psycopg.Rollback()
            sender.execute("select pg_notify('ticks', 'b')")
            sender.execute("notify other, 'x'")
            with sender.transaction():
                sender.execute("notify ticks, 'c'")
                sender.execute("notify ticks, 'd'")
            sender.execute("notify ctl, 'stop1'")

        _phase[0] = "listen: round 1"
        c1, c2 = Collector(l1, "stop1"), Collector(l2, "stop1")
        send_round_one()
        deadline = time.monotonic() + NOTIFY_WAIT_SECONDS
        round1 = [c1.wait(deadline), c2.wait(deadline)]
        result = {"round1": [{"received": r[0], "complete": r[1]} for r in round1], "pids": pids}
        if not all(r[1] for r in round1):
            return result  # a collector thread still holds its connection; stop here

        # The listener keeps working as a normal client, then stops listening on `ticks`; l2 goes on.
        _phase[0] = "listen: round 2"
        for _ in range(8):
            pids.append(l1.execute("select pg_backend_pid()").fetchone()[0])
            time.sleep(0.003)
        l1.execute("unlisten ticks")
        c1, c2 = Collector(l1, "stop2"), Collector(l2, "stop2")
        sender.execute("notify ticks, 'e'")
        sender.execute("notify ctl, 'stop2'")
        deadline = time.monotonic() + NOTIFY_WAIT_SECONDS
        round2 = [c1.wait(deadline), c2.wait(deadline)]
        result["round2"] = [{"received": r[0], "complete": r[1]} for r in round2]
        return result
    finally:
        stop.set()


CHECKS = {
    "prepared": check_prepared,
    "pipeline": check_pipeline,
    "settings": check_settings,
    "listen": check_listen,
}


def main():
    start_watchdog()
    check = CHECKS[sys.argv[1]]
    try:
        result = check(*sys.argv[2:])
    except BaseException as exc:  # noqa: BLE001 - the test asserts on it
        result = {"error": error_json(exc)}
    result["driver"] = f"psycopg {psycopg.__version__} (libpq {psycopg.pq.version()})"
    emit(result)
    # Daemon threads may still be blocked on a connection that never answered.
    os._exit(0)


if __name__ == "__main__":
    main()
