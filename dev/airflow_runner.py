"""Run real Airflow (``airflow db migrate``, ``airflow dags test``) in a throwaway AIRFLOW_HOME.

``make demo`` runs the example DAGs with ``airflow dags test``; the DAG tests run them in-process
with ``dag.test()`` and use this module to read task states and XCom values back from the run's
SQLite database.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


class AirflowHome:
    """
    A throwaway ``AIRFLOW_HOME`` with its own SQLite database and dags folder.

    :param home: the folder (created if missing).
    :param dags_folder: where the DAG files are.
    """

    def __init__(self, home: Path, dags_folder: Path) -> None:
        self.home = Path(home)
        self.dags_folder = Path(dags_folder)
        self.home.mkdir(parents=True, exist_ok=True)
        self.database = self.home / "airflow.db"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment Airflow commands run with."""
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__") and not k.startswith("AIRFLOW_CONN_")
        }
        env.update(
            AIRFLOW_HOME=str(self.home),
            AIRFLOW__CORE__DAGS_FOLDER=str(self.dags_folder),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{self.database}",
            AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        )
        env.update(extra or {})
        return env

    def migrate(self) -> None:
        """Create the database (``airflow db migrate``)."""
        done = subprocess.run([AIRFLOW, "db", "migrate"], env=self.env(), capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{done.stdout}\n{done.stderr}")

    def dags_test_command(self, dag_id: str, conf: dict[str, Any] | None = None) -> list[str]:
        """The ``airflow dags test`` command line for a DAG."""
        command = [AIRFLOW, "dags", "test", dag_id]
        if conf:
            command += ["--conf", json.dumps(conf)]
        return command

    def dags_test(
        self,
        dag_id: str,
        *,
        conf: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        """
        Run ``airflow dags test`` and wait for it.

        :param dag_id: the DAG.
        :param conf: the run's conf (overrides params).
        :param env: extra environment, such as ``AIRFLOW_CONN_CLUBCOLLECT_DEFAULT``.
        :param timeout: seconds before the run is killed.
        """
        return subprocess.run(
            self.dags_test_command(dag_id, conf),
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def last_run_state(self, dag_id: str) -> str | None:
        """The state of the DAG's newest run."""
        with sqlite3.connect(self.database) as db:
            row = db.execute(
                "SELECT state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
            ).fetchone()
        return row[0] if row else None

    def task_states(self, dag_id: str) -> dict[str, str]:
        """``task_id[map_index]`` to state, for the DAG's newest run."""
        rows = self._newest_run_rows(dag_id, "SELECT task_id, map_index, state FROM task_instance")
        return {(task if index < 0 else f"{task}[{index}]"): state for task, index, state in rows}

    def reschedules(self, dag_id: str, task_id: str) -> int:
        """How often a task of the DAG's newest run gave its slot back (reschedule mode)."""
        with sqlite3.connect(self.database) as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(task_reschedule)")}
        # Airflow 3 links a reschedule to its task instance's id; Airflow 2.11 names the task in the row.
        if "ti_id" in columns:
            table = "task_reschedule JOIN task_instance ON task_instance.id = ti_id"
        else:
            table = "task_reschedule"
        rows = self._newest_run_rows(dag_id, f"SELECT task_reschedule.id FROM {table}", "AND task_id = ?", task_id)
        return len(rows)

    def task_tries(self, dag_id: str, task_id: str) -> list[dict[str, Any]]:
        """
        Every try of a task of the DAG's newest run, in order (Airflow 3.3+): the earlier ones from
        Airflow's task instance history, the last from the task instance.

        :return: per try its ``try_number``, ``state`` (``failed`` for a try that was retried),
            ``start_date`` and ``end_date`` (datetimes, or ``None``), and what a task retry policy
            decided: ``retry_delay_override`` (seconds, or ``None``) and ``retry_reason``.
        """
        names = ("try_number", "state", "start_date", "end_date", "retry_delay_override", "retry_reason")
        select = f"SELECT {', '.join(names)} FROM"
        rows = self._newest_run_rows(dag_id, f"{select} task_instance_history", "AND task_id = ?", task_id)
        rows += self._newest_run_rows(dag_id, f"{select} task_instance", "AND task_id = ?", task_id)
        tries = {row[0]: dict(zip(names, row, strict=True)) for row in rows}  # the last try may be in both
        for found in tries.values():
            for name in ("start_date", "end_date"):
                found[name] = None if found[name] is None else datetime.fromisoformat(str(found[name]))
        return [tries[number] for number in sorted(tries)]

    def xcom(self, dag_id: str, task_id: str, *, map_index: int = -1, key: str = "return_value") -> Any:
        """
        An XCom value of the DAG's newest run.

        :raises KeyError: when there is none.
        """
        rows = self._newest_run_rows(
            dag_id, "SELECT value FROM xcom", "AND task_id = ? AND map_index = ? AND key = ?", task_id, map_index, key
        )
        if not rows:
            raise KeyError(f"no XCom {key!r} of {dag_id}.{task_id}[{map_index}]")
        return json.loads(rows[0][0])

    def _newest_run_rows(self, dag_id: str, select: str, where: str = "", *params: object) -> list[Any]:
        # ``select`` reads a table with dag_id and run_id columns, narrowed to the newest run.
        with sqlite3.connect(self.database) as db:
            run = db.execute(
                "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
            ).fetchone()
            return db.execute(
                f"{select} WHERE dag_id = ? AND run_id = ? {where}", (dag_id, run[0] if run else None, *params)
            ).fetchall()
