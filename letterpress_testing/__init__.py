"""Testing tools for Letterpress; no product module (``pipeline``, ``workers``) imports
this package, and the Docker image leaves it out.

The provider double: a stand-in for Mailgun, SendGrid and Postmark, a real HTTP server
on loopback that the tests, the benchmarks and a person with curl send through.

    server     ``DoubleServer`` (in a thread), the HTTP handler and control endpoints
    faults     ``Fault``: the ways it misbehaves on request
    state      what it remembers: recipients, kept messages and requests, answers
    parsing    reading request bodies: forms, address lists, Basic auth
    mailgun    Mailgun's send and events endpoints
    sendgrid   SendGrid's v3 mail send
    postmark   Postmark's batch send and message search
    __main__   ``python -m letterpress_testing --port 8025``: the double in a process
"""
