"""Provider metadata read by Airflow's providers manager (entry point ``apache_airflow_provider``).

The connection form is declared here as data (``conn-fields`` and ``ui-field-behaviour``), the way
Airflow 3.2+ reads it without importing the hook; the hook defines none of the deprecated form
methods.  Defaults shown in the form are the constants below, which the hook uses too.
"""

from __future__ import annotations

from typing import Any, Final

from airflow_provider_clubcollect import __version__

__all__ = ["get_provider_info"]

# The distribution and its connection, defined here because Airflow reads this module (through
# the package's entry point) without importing the hook, and the hook, the sandbox and the
# connection form all name the same things.  Plain values only: importing this must never import Airflow.
DISTRIBUTION_NAME: Final = "airflow-provider-clubcollect"
CONN_TYPE: Final = "clubcollect"
DEFAULT_CONN_ID: Final = "clubcollect_default"
#: The base URL of a connection without a host: ClubCollect's production API.
DEFAULT_BASE_URL: Final = "https://app.clubcollect.com/api"
CONN_EXTRA_TIMEOUT: Final = "timeout"
CONN_EXTRA_MAX_RETRIES: Final = "max_retries"
CONN_EXTRA_MAX_REQUESTS_PER_SECOND: Final = "max_requests_per_second"
CONN_EXTRA_BUDGET_URL: Final = "budget_url"
#: Every extra a clubcollect connection takes; any other is refused, naming the closest of these.
CONN_EXTRAS: Final = (
    CONN_EXTRA_TIMEOUT,
    CONN_EXTRA_MAX_RETRIES,
    CONN_EXTRA_MAX_REQUESTS_PER_SECOND,
    CONN_EXTRA_BUDGET_URL,
)
DEFAULT_TIMEOUT_SECONDS: Final = 30.0
DEFAULT_MAX_RETRIES: Final = 5
#: The most retries allowed: more would wait for hours and only hide an outage.
MAX_RETRIES_LIMIT: Final = 100

_INTEGRATION = "ClubCollect"


def get_provider_info() -> dict[str, Any]:
    """
    Describe the provider to Airflow.

    :return: provider metadata that validates against ``airflow/provider_info.schema.json``.
    """
    return {
        "package-name": DISTRIBUTION_NAME,
        "name": "ClubCollect",
        "description": "`ClubCollect <https://www.clubcollect.com/>`__ Tickets API: read, answer, "
        "archive and escalate the ticket threads members open on invoices.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://docs.clubcollect.com/api-documentation/ticket",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_provider_clubcollect.hooks.clubcollect"],
            }
        ],
        "operators": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_provider_clubcollect.operators.tickets"],
            }
        ],
        "sensors": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_provider_clubcollect.sensors.tickets"],
            }
        ],
        "triggers": [
            {
                "integration-name": _INTEGRATION,
                "python-modules": ["airflow_provider_clubcollect.triggers.tickets"],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_clubcollect.hooks.clubcollect.ClubCollectHook",
                "hook-name": "ClubCollect",
                "connection-type": CONN_TYPE,
                "conn-fields": {
                    CONN_EXTRA_TIMEOUT: {
                        "label": "Timeout (seconds per request)",
                        "schema": {
                            "type": ["number", "null"],
                            "default": DEFAULT_TIMEOUT_SECONDS,
                            "exclusiveMinimum": 0,
                        },
                        "description": "How long one request may take before it is retried.",
                    },
                    CONN_EXTRA_MAX_RETRIES: {
                        "label": "Max retries",
                        "schema": {
                            "type": ["integer", "null"],
                            "default": DEFAULT_MAX_RETRIES,
                            "minimum": 0,
                            "maximum": MAX_RETRIES_LIMIT,
                        },
                        "description": "Retries after a connection error, 429 or 5xx, "
                        "with exponential back-off; Retry-After is honoured.",
                    },
                    CONN_EXTRA_MAX_REQUESTS_PER_SECOND: {
                        "label": "Max requests per second",
                        "schema": {"type": ["number", "null"], "default": None, "exclusiveMinimum": 0},
                        "description": "One cap for every request made with this API key: hook, sensor, "
                        "triggers and bulk actions. Per process, or across the deployment with a budget URL. "
                        "Empty: no cap.",
                    },
                    CONN_EXTRA_BUDGET_URL: {
                        "label": "Budget URL (Redis)",
                        # A password format: Airflow masks the field, which may carry a Redis password.
                        "schema": {"type": ["string", "null"], "default": None, "format": "password"},
                        "description": "redis://[:password@]host:port/db or rediss://...: every process "
                        "(workers, triggerer) draws from one budget per API key there. Needs the provider's "
                        "budget extra. Empty: each process keeps the cap alone.",
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port", "extra"],
                    "relabeling": {"password": "API key", "host": "Base URL"},
                    "placeholders": {
                        "host": f"{DEFAULT_BASE_URL} (default), sandbox.clubcollect.com, or http://127.0.0.1:8765/api",
                        "password": "ClubCollect partner API key",
                    },
                },
            }
        ],
    }
