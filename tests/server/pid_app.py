"""A WSGI app for the gunicorn worker tests: answers with the worker's pid after sleeping ``?sleep=`` seconds or
computing (holding the GIL, as a busy worker does) for ``?busy=`` seconds."""

import os
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    time.sleep(float(query.get("sleep", ["0"])[0]))
    busy_until = time.thread_time() + float(query.get("busy", ["0"])[0])
    while time.thread_time() < busy_until:
        pass
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
