"""Notifications: what happens to runs, told to the people concerned, where they already are.

    events.py        the kinds of event, and who gets which (per-user defaults, per-run/per-sweep choices)
    sealing.py       destination URLs and signing secrets encrypted at rest (a key outside the output dir)
    safety.py        where a destination may make the server connect (schemes, addresses, exceptions)
    destinations.py  a user's destinations: check a URL (Apprise, lazily), add, list, remove, test
    message.py       an event as a message: a versioned JSON body, and a title and text for chat and e-mail
    webhook.py       the signed JSON webhook (``labrun+https://``), connected to the checked address
    sending.py       one delivery to one destination, through Apprise or the webhook
    worker.py        the delivery thread: fan events out, send, retry with backoff, pause what keeps failing

The outbox itself lives in the store (``app/store/outbox.py``): events are written by triggers in the same
transaction as the status change that caused them. Apprise is imported only when a destination is checked
or sent to, never at start-up.
"""
