"""Conformance: `lab conform TARGET` runs the case catalogue of docs/conformance.md.

| module | job |
|---|---|
| `model.py` | case specs, outcomes (passed / failed / unsupported / skipped), results (pure) |
| `case.py`, `registry.py` | `@case(...)` and the list of every case, `--cases` selection |
| `context.py` | what a case gets: endpoint, client-side sockets, timeouts, server control |
| `h2wire.py`, `quicwire.py` | raw HTTP/2 frames over TLS; aioquic QUIC/HTTP/3 driven on trio |
| `initial.py`, `altsvc.py` | raw client Initials; the Alt-Svc grammar (pure) |
| `expect.py` | the pass/fail policy: generic codes, "coarse" connection errors, closes |
| `h2.py`, `h3.py`, `quic.py`, `zero_rtt.py`, `dual_stack.py`, `external.py` | the cases |
| `target.py` | a URL, or a server started in the lab's namespaces (behind the emulator) |
| `linkfile.py` | `--link LINK.yaml` |
| `runner.py` | clean path, then the ⟳ cases through the impaired link; reruns; deadlines |
| `output.py` | terminal table, JUnit XML, JSON |
"""
