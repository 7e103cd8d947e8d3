"""Escalations: agents asking for a human, tracked until a human answers; and the alerting
path every rule shares.

    pipeline worker ─ Escalations.observe(call, link, record) ─ detect.py (pure) ─▶ worker queue
    worker: tracker.py (SLA clocks, in the store, re-armed at start) ─▶ alerts.py (routes by
    name, dedup) ─▶ notify.py (webhook: JSON, HMAC-signed, retried; Slack; OTel event)
    holds.py: runs held after a breach (read by guards/escalation.py on the request path)
    health.py: routes not exercised lately;  drill.py: `interlock drill RULE`
    service.py: `Escalations`, the one object the runtime builds, starts and closes.

Import submodules directly (`from proxy.escalation.service import Escalations`): this
package's __init__ stays empty so that the request path's guard (guards/escalation.py, which
reads `holds`) does not load the worker side (service, notify, alerts).
"""
