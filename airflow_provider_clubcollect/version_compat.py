"""What differs between the Airflow versions supported (2.11 to 3.3) beyond names ``common.compat.sdk`` covers."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS as AIRFLOW_V_3_0_PLUS
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS as AIRFLOW_V_3_1_PLUS
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_2_PLUS as AIRFLOW_V_3_2_PLUS
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_3_PLUS as AIRFLOW_V_3_3_PLUS

if TYPE_CHECKING:
    from airflow.sdk import Connection


def mask_secret(secret: str) -> None:
    """Mask ``secret`` in Airflow's logs (moved in 3.0 and 3.1; common-compat 1.20.0 for Python 3.10 lacks it)."""
    import importlib

    for name in ("airflow.sdk.log", "airflow.sdk.execution_time.secrets_masker", "airflow.utils.log.secrets_masker"):
        with contextlib.suppress(ImportError):
            if mask := getattr(importlib.import_module(name), "mask_secret", None):
                mask(secret)
                return


async def amask_secret(secret: str) -> None:
    """:func:`mask_secret` from the event loop: Airflow 3.3's async form, else the sync one in a thread."""
    if not AIRFLOW_V_3_3_PLUS:
        return await asyncio.to_thread(mask_secret, secret)
    from airflow.sdk.log import amask_secret as amask

    await amask(secret)


async def aget_connection(conn_id: str) -> Connection:
    """A connection, read without blocking the loop: ``BaseHook.aget_connection`` on 3.1+, else in a thread."""
    from airflow.providers.common.compat.sdk import BaseHook

    if AIRFLOW_V_3_1_PLUS:
        return await BaseHook.aget_connection(conn_id)
    from asgiref.sync import sync_to_async

    return await sync_to_async(BaseHook.get_connection)(conn_id)
