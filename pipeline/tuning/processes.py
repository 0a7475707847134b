"""The worker processes of a parallel sweep, watched by the parent.

`multiprocessing.Pool` loses the task of a worker that dies (`kill -9`, the OOM killer) and waits for it
forever. Here each worker is a `Process` the parent polls. A worker that dies without reporting is
announced; the trial it was training goes stale and the workers still running fail it by its heartbeat
and retry it. While the study still needs trials (and time is left) a replacement starts, up to `workers`
deaths in a row with no trial finished in between, so a worker that cannot start is not restarted forever.
Meanwhile the parent logs a line per finished trial (`Progress`). A spawned worker inherits no logging
handler: it sends its `xalign` records to stderr itself, at the parent's level (`pipeline.logs`).
"""

import logging
import multiprocessing
import os
import queue
import signal
import time
import traceback

import optuna

from encoding.errors import BadInput
from pipeline.logs import ROOT, configure_logging
from pipeline.tuning.algorithms import build_sampler
from pipeline.tuning.progress import Progress
from pipeline.tuning.settings import TuneSettings
from pipeline.tuning.worker import count_finished, run_worker, study_done

log = logging.getLogger(f"xalign.{__name__}")
POLL_S = 1.0
REPORT_WAIT_S = 10.0  # how long a worker that exited cleanly may take to deliver its report


def work(reports, index: int, args: tuple, level: int) -> None:
    """Process target: `run_worker(*args)`, logging to stderr at `level`; reports (index, stats, None) or
    (index, None, (bad_input, message))."""
    configure_logging()
    logging.getLogger(ROOT).setLevel(level)
    try:
        reports.put((index, run_worker(*args), None))
    except BadInput as err:
        reports.put((index, None, (True, str(err))))
    except Exception as err:
        traceback.print_exc()
        reports.put((index, None, (False, f"{type(err).__name__}: {err}")))


def exit_reason(exitcode: int) -> str:
    if exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"


class Workers:
    """`workers` spawned worker processes on one study; `run` returns their stats once none is left."""

    def __init__(self, settings: TuneSettings, url: str, n_trials: int, timeout: float | None, workers: int):
        self.settings, self.url, self.n_trials, self.workers = settings, url, n_trials, workers
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.threads = max(1, (os.cpu_count() or 1) // workers)
        self.level = logging.getLogger(ROOT).getEffectiveLevel()
        self.context = multiprocessing.get_context("spawn")
        self.reports = self.context.Queue()
        self.running: dict[int, multiprocessing.Process] = {}
        self.started = self.clean_exits = self.lost = self.deaths_in_a_row = self.finished_at_death = 0
        self.stats, self.errors = [], []

    def start(self) -> int:
        """Start worker number `started` (its index also seeds its sampler) with the time left."""
        index, left = self.started, None if self.deadline is None else self.deadline - time.monotonic()
        args = (self.settings, self.url, self.n_trials, left, index, self.threads)
        process = self.context.Process(
            target=work, args=(self.reports, index, args, self.level), name=f"xalign-tune-{index}"
        )
        process.start()
        self.running[index], self.started = process, self.started + 1
        return index

    def run(self, study: optuna.Study, progress: Progress) -> list[dict]:
        """Start the workers and watch them until none is running; re-raises a worker's error."""
        sampler = build_sampler(self.settings.sampler, self.settings.space)
        try:
            for _ in range(self.workers):
                self.start()
            while self.running:
                self.collect(POLL_S)
                progress(study)
                self.reap(study, sampler)
            deadline = time.monotonic() + REPORT_WAIT_S
            while len(self.stats) + len(self.errors) < self.clean_exits and time.monotonic() < deadline:
                self.collect(POLL_S)
        finally:
            self.stop()
        progress(study)
        if self.errors:
            bad_input, message = self.errors[0]
            raise BadInput(message) if bad_input else RuntimeError(f"a sweep worker failed: {message}")
        return self.stats

    def collect(self, timeout: float) -> None:
        """Take the reports that arrive within `timeout` seconds (the first one waited for, the rest as queued)."""
        try:
            item = self.reports.get(timeout=timeout)
            while True:
                _, stats, error = item
                if error is None:
                    self.stats.append(stats)
                else:
                    self.errors.append(error)
                item = self.reports.get_nowait()
        except queue.Empty:
            pass

    def reap(self, study: optuna.Study, sampler) -> None:
        """Forget the workers that ended; announce (and replace) the ones that died."""
        for index, process in list(self.running.items()):
            if process.is_alive():
                continue
            process.join()
            del self.running[index]
            if process.exitcode == 0:
                self.clean_exits += 1
            else:
                self.replace(index, process, study, sampler)

    def replace(self, index: int, process, study: optuna.Study, sampler) -> None:
        """Announce a dead worker and start another while the study needs trials and time is left."""
        self.lost += 1
        log.warning(
            f"worker {index} (pid {process.pid}) died ({exit_reason(process.exitcode)}); its trial is failed "
            f"after the {self.settings.grace_period}s heartbeat grace period and retried"
        )
        finished = count_finished(study)
        self.deaths_in_a_row = 1 if finished > self.finished_at_death else self.deaths_in_a_row + 1
        self.finished_at_death = finished
        if study_done(study, self.n_trials, sampler):
            return
        if self.deadline is not None and time.monotonic() >= self.deadline:
            log.warning("not replacing it: the timeout has passed")
        elif self.deaths_in_a_row > self.workers:
            log.warning(f"not replacing it: {self.deaths_in_a_row} workers died with no trial finished between")
        else:
            log.info(f"started a replacement: worker {self.start()}")

    def stop(self) -> None:
        """Terminate the workers still running (the parent was interrupted or failed)."""
        for process in self.running.values():
            process.terminate()
        for process in self.running.values():
            process.join()
