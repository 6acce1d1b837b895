"""A daily report, run by a schedule: EventBridge's "Scheduled Event" arrives as the event.

A real report would query a database or an API (give the function `network: true`);
this one summarises the run itself so it works anywhere.
"""
import datetime
import json

RUNS = 0  # per instance: the adaptive keep-alive stops idle instances between runs


def handler(event, context):
    global RUNS
    RUNS += 1
    scheduled = event.get("detail-type") == "Scheduled Event"
    when = event.get("time") or datetime.datetime.now(datetime.timezone.utc).isoformat()
    report = {
        "report": "daily",
        "for": when[:10],
        "trigger": "schedule" if scheduled else "manual",
        "rule": (event.get("resources") or ["-"])[0],
        "runs_on_this_instance": RUNS,
        "time_left_ms": context.get_remaining_time_in_millis(),
    }
    print(json.dumps(report))
    return report
