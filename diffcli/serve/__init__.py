"""`diffcli serve`: a resident engine that keeps models loaded and runs jobs one at a time.

Front doors: a private Unix socket the CLI uses on its own when a server is running (client.py,
server.py, protocol.py) and an optional HTTP API (http.py). Every job goes through the same engine
(`diffcli.run.settle` / `plan_outputs` / `execute`) on one worker thread (worker.py).
See docs/serve.md.
"""
