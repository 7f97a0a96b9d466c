"""The load test, small: simulated raters complete a study at once through the running app.

Every rating acknowledged "saved" is stored, none twice, every rater finishes. SQLite always;
PostgreSQL when SURVEY_TEST_PG_URL names a server. The full run (50 raters x 40 stimuli) is
``python -m survey.loadtest``; its figures are in results/reliability.md.
"""

from __future__ import annotations

import pytest

from tools import loadtest
from test_postgres import postgres_database


def _check(result: loadtest.LoadResult, *, raters: int) -> None:
    assert result.completed == raters, result
    assert result.sent == result.stored > 0, result
    assert result.duplicates == 0 and result.lost == 0 and result.unacknowledged == 0, result
    assert result.errors == 0, result
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms


@pytest.mark.e2e
def test_load_on_sqlite_every_acknowledged_rating_stored_once(tmp_path):
    result = loadtest.load_test(raters=5, stimuli=20, timeout_s=120, work_dir=tmp_path)
    _check(result, raters=5)
    assert result.backend == "sqlite"
    assert result.sent == 5 * (20 + 2)  # every stimulus and the 2 hidden repeats, per rater


@pytest.mark.e2e
@pytest.mark.postgres
def test_load_on_postgres_across_two_app_processes_stores_every_rating_once(tmp_path):
    """Scale-out: two app processes share the database; each rater's requests alternate between them."""
    with postgres_database() as url:
        result = loadtest.load_test(raters=4, stimuli=12, db_url=url, servers=2, timeout_s=120, work_dir=tmp_path)
    _check(result, raters=4)
    assert result.backend == "postgresql" and result.servers == 2
    assert result.sent == 4 * (12 + 2)


@pytest.mark.parametrize("url", ["http://10.0.0.1:7860/", "http://example.com/", "http://0.0.0.0.invalid:80/", "nonsense"])
def test_only_loopback_servers_are_load_tested(url):
    with pytest.raises(loadtest.LoadTestError, match="loopback|resolve|Not a server"):
        loadtest.check_loopback(url)
    assert loadtest.main(["--url", url, "--db-url", "sqlite:///x.sqlite", "--raters", "1"]) == 2


def test_runs_are_bounded_and_options_checked():
    assert loadtest.check_loopback("http://127.0.0.1:1") == "http://127.0.0.1:1/"
    assert loadtest.check_loopback("http://localhost:1/") == "http://localhost:1/"
    for options, message in [
        (dict(raters=0, stimuli=40), "raters"),
        (dict(raters=loadtest.MAX_RATERS + 1, stimuli=40), "raters"),
        (dict(raters=1, stimuli=loadtest.MAX_STIMULI + 4), "stimuli"),
        (dict(raters=1, stimuli=40, url="http://127.0.0.1:1/"), "--db-url"),
        (dict(raters=1, stimuli=40, servers=loadtest.MAX_SERVERS + 1), "servers"),
    ]:
        with pytest.raises(loadtest.LoadTestError, match=message):
            loadtest.load_test(**options)
    with pytest.raises(loadtest.LoadTestError, match="multiple of 4"):
        loadtest.write_synthetic_outputs(None, stimuli=10)


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert loadtest.percentile(values, 50) == 50 and loadtest.percentile(values, 99) == 99
    assert loadtest.percentile([7.0], 99) == 7 and loadtest.percentile([], 50) == 0
