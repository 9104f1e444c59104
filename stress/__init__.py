"""The Locust stress harness of cc-executor: users, gates, orphan checks.

Run it through ``ci/stress`` (``make stress``); the locustfile is
``stress/locustfile.py``; ``docs/stress.md`` describes the scenarios.
"""
