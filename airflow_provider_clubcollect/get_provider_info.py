"""Provider metadata read by Airflow's providers manager (entry point ``apache_airflow_provider``).

The connection form is declared here as data (``conn-fields`` and ``ui-field-behaviour``), the way
Airflow 3.2+ reads it without importing the hook; the hook defines none of the deprecated form
methods.  Defaults shown in the form come from the same constants the hook uses.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_clubcollect.wire import (
    CONN_EXTRA_MAX_RETRIES,
    CONN_EXTRA_TIMEOUT,
    CONN_TYPE,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_SECONDS,
    DISTRIBUTION_NAME,
)

_INTEGRATION = "ClubCollect"


def get_provider_info() -> dict[str, Any]:
    """
    Describe the provider to Airflow.

    :return: provider metadata that validates against ``airflow/provider_info.schema.json``.
    """
    from airflow_provider_clubcollect import __version__

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
                        },
                        "description": "Retries after a connection error, 429 or 5xx, "
                        "with exponential back-off; Retry-After is honoured.",
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
