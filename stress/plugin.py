"""The harness's hooks into Locust: options, RSS sampling, orphan reaping,
gates and the summary.

:func:`register` attaches the listeners to ``locust.events``; the locustfile
calls it once. The master (or the only process) samples the server's RSS
from ``test_start`` to the end, and at ``quitting`` stops the users, reaps
orphans, evaluates the gates, prints the summary and sets
``environment.process_exit_code`` from the gates (1 when one failed, else 0). Workers only ship
their figures to the master.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from locust import events
from locust.runners import STATE_STOPPED, MasterRunner, WorkerRunner

from stress import gates, metrics, orphans, report, settings
from stress.rss import RssSampler, peak_of

logger = logging.getLogger(__name__)


class Harness:
    """State of the run on the master (or the only process)."""

    def __init__(self) -> None:
        #: One per host of ``--host`` (several for the nodes of a cluster).
        self.samplers: list[RssSampler] = []
        self.done = False

    def options(self, environment: Any) -> settings.RunSettings:
        return settings.RunSettings.from_environment(environment)

    # --- listeners ---------------------------------------------------------------

    def on_init(self, environment: Any, runner: Any = None, **_: Any) -> None:
        if isinstance(runner, WorkerRunner):
            events.report_to_master.add_listener(lambda client_id, data: metrics.to_master(data))
            return
        if isinstance(runner, MasterRunner):
            events.worker_report.add_listener(metrics.from_worker)
        options = environment.parsed_options
        if options is None:
            return
        try:
            run = self.options(environment)
        except ValueError as exc:
            logger.error("%s", exc)
            sys.exit(2)
        if not run.marker:
            options.run_marker = settings.new_marker()
        chosen = [cls for cls in environment.user_classes if cls.__name__ in run.users]
        if not chosen:
            logger.error(
                "--stress-users %s selects no user of this locustfile", options.stress_users
            )
            sys.exit(2)
        environment.user_classes = chosen
        if getattr(options, "class_picker", False) and environment.available_user_classes:
            # The web UI ticks every class it offers: offer the --stress-users
            # mix (JobUser only when asked for), as docs/stress.md says.
            environment.available_user_classes = {
                name: cls
                for name, cls in environment.available_user_classes.items()
                if name in run.users
            }

    def on_test_start(self, environment: Any, **_: Any) -> None:
        if isinstance(environment.runner, WorkerRunner):
            return
        options = environment.parsed_options
        if options is not None and not options.run_marker:
            options.run_marker = settings.new_marker()  # cleared in the web UI form
        run = self.options(environment)
        metrics.FIGURES.reset()
        self.done = False
        for sampler in self.samplers:
            sampler.stop()
        self.samplers = [
            RssSampler(
                run.server_pid(index), settings.http_url(url, ""), run.rss_interval_s, run.token
            )
            for index, url in enumerate(settings.hosts(environment.host or "127.0.0.1"))
        ]
        for sampler in self.samplers:
            sampler.start()

    def on_quitting(self, environment: Any, **_: Any) -> None:
        if isinstance(environment.runner, WorkerRunner) or self.done:
            return
        self.done = True
        runner = environment.runner
        if runner is not None and runner.state != STATE_STOPPED:
            runner.stop()  # users cancel what they run in on_stop
        run = self.options(environment)
        for sampler in self.samplers:
            sampler.stop()
        # The gate bounds each server: the largest of the nodes' peaks.
        peak = peak_of(self.samplers)
        found = orphans.reap(run.marker, run.orphan_grace_s)
        errors = len(runner.exceptions) if runner is not None else 0
        figures = gates.RunFigures(report.name_stats(environment.stats), peak, found, errors)
        bounds = gates.Bounds(run.max_fail_ratio, run.control_p95_ms, run.max_rss_mb)
        verdict = gates.evaluate(figures, bounds)
        print(report.render(figures, metrics.FIGURES, verdict, run.marker), flush=True)
        if run.summary_json:
            path = Path(run.summary_json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(report.as_json(figures, metrics.FIGURES, verdict, run.marker))
        # The gates decide, both ways: Locust alone would exit 1 on a single
        # failed request, which the failure-ratio gate exists to tolerate.
        environment.process_exit_code = 0 if gates.passed(verdict) else 1


def register() -> Harness:
    """Attach the harness's listeners to Locust's events; once per process."""
    harness = Harness()
    events.init_command_line_parser.add_listener(settings.add_arguments)
    events.init.add_listener(harness.on_init)
    events.test_start.add_listener(harness.on_test_start)
    events.quitting.add_listener(harness.on_quitting)
    return harness
