"""Provider metadata read by Airflow's providers manager (without importing Airflow), the connection form as data."""

from __future__ import annotations

from typing import Any, Final

from airflow_provider_clubcollect import __version__

__all__ = ["get_provider_info"]

DISTRIBUTION_NAME: Final = "airflow-provider-clubcollect"
CONN_TYPE: Final = "clubcollect"
DEFAULT_CONN_ID: Final = "clubcollect_default"
DEFAULT_BASE_URL: Final = "https://app.clubcollect.com/api"
_INTEGRATION = "ClubCollect"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow: metadata that validates against ``airflow/provider_info.schema.json``."""
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
        "hooks": [{"integration-name": _INTEGRATION, "python-modules": [f"{__package__}.hooks.clubcollect"]}],
        "operators": [{"integration-name": _INTEGRATION, "python-modules": [f"{__package__}.operators.tickets"]}],
        "sensors": [{"integration-name": _INTEGRATION, "python-modules": [f"{__package__}.sensors.tickets"]}],
        "triggers": [{"integration-name": _INTEGRATION, "python-modules": [f"{__package__}.triggers.tickets"]}],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_clubcollect.hooks.clubcollect.ClubCollectHook",
                "hook-name": "ClubCollect",
                "connection-type": CONN_TYPE,
                "conn-fields": {
                    "timeout": {
                        "label": "Timeout (seconds per request)",
                        "schema": {"type": ["number", "null"], "default": 30.0, "exclusiveMinimum": 0},
                        "description": "How long one request may take before it is retried.",
                    },
                    "max_retries": {
                        "label": "Max retries",
                        "schema": {"type": ["integer", "null"], "default": 5, "minimum": 0, "maximum": 100},
                        "description": "Retries after a connection error, 429 or 5xx; Retry-After is honoured.",
                    },
                    "max_requests_per_second": {
                        "label": "Max requests per second",
                        "schema": {"type": ["number", "null"], "default": None, "exclusiveMinimum": 0},
                        "description": "One cap for every request made with this API key, per process or across "
                        "the deployment with a budget URL. Empty: no cap.",
                    },
                    "budget_url": {
                        "label": "Budget URL (Redis)",
                        # A password format: Airflow masks the field, which may carry a Redis password.
                        "schema": {"type": ["string", "null"], "default": None, "format": "password"},
                        "description": "redis://[:password@]host:port/db or rediss://...: one budget per API key "
                        "for every process (needs the provider's budget extra). Empty: each process alone.",
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
