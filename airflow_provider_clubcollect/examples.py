"""Copy the ClubCollect provider's example DAGs into a DAGs folder (Airflow's [core] dags_folder).

The wheel ships them as package data (example-dags/, which Airflow never parses); a checkout has example_dags/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

_HERE = Path(__file__).resolve().parent


def main(argv: Sequence[str] | None = None) -> int:
    """
    Copy the example DAGs.

    :param argv: the arguments (``sys.argv[1:]`` when ``None``).
    :return: the exit status: 0 when every file is in place, 1 when one was left alone.
    """
    parser = argparse.ArgumentParser(prog="python -m airflow_provider_clubcollect.examples", description=__doc__)
    parser.add_argument("dags_folder", type=Path, help="where to copy them: Airflow's [core] dags_folder")
    parser.add_argument("dag_ids", nargs="*", metavar="DAG_ID", help="only these example DAGs (default: all)")
    parser.add_argument("--force", action="store_true", help="overwrite files of the same name that differ")
    args = parser.parse_args(argv)
    # The wheel's copy (pyproject.toml's force-include), else a checkout's; each file is named after its DAG.
    folder = next((f for f in (_HERE / "example-dags", _HERE.parent / "example_dags") if f.is_dir()), None)
    if folder is None:  # a broken install: say so rather than show a StopIteration
        sys.exit(f"No example DAGs next to {_HERE}: reinstall airflow-provider-clubcollect.")
    available = {path.stem: path for path in sorted(folder.glob("clubcollect_*.py"))}
    if unknown := sorted(set(args.dag_ids) - set(available)):
        parser.error(f"no example DAG {', '.join(unknown)}; the examples are: {', '.join(available)}")
    args.dags_folder.mkdir(parents=True, exist_ok=True)
    kept = 0
    for dag_id in args.dag_ids or available:
        source, target = available[dag_id], args.dags_folder / available[dag_id].name
        if target.exists() and target.read_bytes() != source.read_bytes() and not args.force:
            print(f"left {target} alone: it differs from the example (--force overwrites it)", file=sys.stderr)
            kept += 1
        else:
            target.write_bytes(source.read_bytes())
            print(f"copied {target}")
    print(f"Run one with: airflow dags test {(args.dag_ids or ['clubcollect_export_tickets'])[0]}")
    return min(kept, 1)


if __name__ == "__main__":
    sys.exit(main())
