"""The policy's ``monitoring`` and ``validation`` sections: the seed's values by default, every
key documented in qlp.example.yml, and a wrong choice named by its key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from procedures.errors import ConfigError
from procedures.policy import Monitoring, Validation
from tests.fakes.policies import make_policy

EXAMPLE = yaml.safe_load((Path(__file__).parents[2] / "qlp.example.yml").read_text())


def test_defaults_are_the_seed_values() -> None:
    m = Monitoring()
    assert (m.duration, m.interval) == (timedelta(minutes=30), timedelta(seconds=30))
    assert (m.health_failure_ratio, m.health_window, m.health_failures) == (
        0.5, timedelta(minutes=5), 10)
    assert (m.error_rate_ratio, m.response_time_ratio) == (10.0, 2.0)
    assert (m.response_time_ms, m.error_threshold, m.error_window, m.db_query_ms) == (
        2000, 5, timedelta(minutes=5), 100)
    assert (m.warnings_investigate, m.no_data) == (20, "warn")
    v = Validation()
    assert (v.health, v.ci, v.backup, v.backup_max_age) == ("gate", "gate", "gate",
                                                            timedelta(hours=6))
    assert (v.errors, v.errors_per_hour, v.slow_queries, v.slow_queries_max, v.no_data) == (
        "warn", 10, "warn", 5, "warn")


def test_the_example_documents_every_key_with_the_seed_value() -> None:
    assert set(EXAMPLE["validation"]) == set(Validation.model_fields)
    assert set(Monitoring.model_fields) - set(EXAMPLE["monitoring"]) == {"database_health"}
    policy = make_policy(monitoring=EXAMPLE["monitoring"], validation=EXAMPLE["validation"])
    assert policy.monitoring == Monitoring() and policy.validation == Validation()


@pytest.mark.parametrize(("section", "values", "key"), [
    ("validation", {"errors": "block"}, "validation.errors"),
    ("validation", {"backup_max_age": "0s"}, "validation"),
    ("monitoring", {"no_data": "ignore"}, "monitoring.no_data"),
    ("monitoring", {"database_health": ["health/db"]}, "monitoring.database_health"),
    ("monitoring", {"health_failures": 0}, "monitoring.health_failures"),
])
def test_a_wrong_value_names_its_key(section: str, values: dict[str, object],
                                     key: str) -> None:
    with pytest.raises(ConfigError) as error:
        make_policy(**{section: values})
    assert error.value.key.startswith(key), error.value
