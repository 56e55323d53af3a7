"""An app process that sends one budget crossing through an ``AlertDispatcher`` sharing the test's store.

argv[1]: JSON with ``store``, ``webhook``, ``secret``, ``lease_s``, ``timeout_s``, ``backoff_s``,
``go`` (a file to wait for before notifying, so that several processes notify at once), ``crossing``
(``budget`` kwargs, ``window_key``, ``start_ns``, ``end_ns``, ``threshold``, ``spent``, ``limit``,
``at_ns``) and ``hold`` (stay alive after notifying, to be killed). Logs at DEBUG on stderr. Prints
``READY <pid>`` once the dispatcher runs, then (unless holding) ``STATS <json>`` after ``flush``.
"""

import json
import logging
import os
import sys
import time

from otel_usecase.budgets.alerts import AlertDispatcher
from otel_usecase.budgets.model import Budget, Crossing

logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
args = json.loads(sys.argv[1])
dispatcher = AlertDispatcher(
    args["store"],
    webhook=args["webhook"],
    secret=args["secret"],
    lease_s=args["lease_s"],
    timeout_s=args["timeout_s"],
    backoff_s=args["backoff_s"],
    max_backoff_s=args["backoff_s"] * 2,
)
c = args["crossing"]
crossing = Crossing(
    Budget(**c["budget"]),
    c["window_key"],
    c["start_ns"],
    c["end_ns"],
    c["threshold"],
    c["spent"],
    c["limit"],
    c["at_ns"],
)
print(f"READY {os.getpid()}", flush=True)
deadline = time.monotonic() + 60
while not os.path.exists(args["go"]) and time.monotonic() < deadline:
    time.sleep(0.005)
dispatcher.notify(crossing)
if args.get("hold"):
    while True:
        time.sleep(1)
flushed = dispatcher.flush(60)
print("STATS " + json.dumps({**dispatcher.stats()._asdict(), "flushed": flushed}), flush=True)
dispatcher.close()
