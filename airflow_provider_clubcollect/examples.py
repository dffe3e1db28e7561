"""``python -m airflow_provider_clubcollect.examples DAGS_FOLDER``: copy the example DAGs into a DAGs folder.

The wheel ships the example DAGs as package data, in ``airflow_provider_clubcollect/example-dags/``: a
directory no ``import`` can reach and no Airflow parses (Airflow reads its own ``dags_folder`` only).
This command copies them where Airflow looks; in a checkout of the repository it copies
``example_dags/``.  A file already there with other content is left alone unless ``--force``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Where the wheel puts the example DAGs (pyproject.toml's ``force-include``).
PACKAGED = Path(__file__).resolve().parent / "example-dags"
#: Where they are in a checkout (an editable install).
CHECKOUT = Path(__file__).resolve().parent.parent / "example_dags"


def example_dags() -> dict[str, Path]:
    """The example DAG files by DAG id (each file is named after its DAG)."""
    for folder in (PACKAGED, CHECKOUT):
        if folder.is_dir():
            return {path.stem: path for path in sorted(folder.glob("clubcollect_*.py"))}
    raise FileNotFoundError(f"no example DAGs in {PACKAGED} or {CHECKOUT}: reinstall airflow-provider-clubcollect")


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_clubcollect.examples",
        description="Copy the ClubCollect provider's example DAGs into a DAGs folder.",
    )
    parser.add_argument("dags_folder", type=Path, help="where to copy them: Airflow's [core] dags_folder")
    parser.add_argument("dag_ids", nargs="*", metavar="DAG_ID", help="only these example DAGs (default: all)")
    parser.add_argument("--force", action="store_true", help="overwrite files of the same name that differ")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """
    Copy the example DAGs.

    :param argv: the arguments (``sys.argv[1:]`` when ``None``).
    :param out: where to print (standard output when ``None``).
    :return: the exit status: 0 when every file is in place, 1 when one was left alone.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    out = out or sys.stdout
    available = example_dags()
    unknown = sorted(set(args.dag_ids) - set(available))
    if unknown:
        parser.error(f"no example DAG {', '.join(unknown)}; the examples are: {', '.join(available)}")
    args.dags_folder.mkdir(parents=True, exist_ok=True)
    kept = []
    for dag_id in args.dag_ids or available:
        source, target = available[dag_id], args.dags_folder / available[dag_id].name
        if target.exists() and target.read_bytes() != source.read_bytes() and not args.force:
            kept.append(target)
            continue
        target.write_bytes(source.read_bytes())
        print(f"copied {target}", file=out)
    for target in kept:
        print(f"left {target} alone: it differs from the example (--force overwrites it)", file=sys.stderr)
    print(
        f"Run one with: airflow dags test {args.dag_ids[0] if args.dag_ids else 'clubcollect_export_tickets'}", file=out
    )
    return 1 if kept else 0


if __name__ == "__main__":
    sys.exit(main())
