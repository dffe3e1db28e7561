"""`make demo`: show that Airflow sees the provider (the sandbox demo replaces this once it lands)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    home = tempfile.mkdtemp(prefix="clubcollect-demo-")
    env = dict(os.environ, AIRFLOW_HOME=home, AIRFLOW__CORE__LOAD_EXAMPLES="False")
    airflow = str(Path(sys.executable).with_name("airflow"))
    providers = subprocess.run([airflow, "providers", "list", "-o", "json"], env=env, capture_output=True, text=True)
    hooks = subprocess.run([airflow, "providers", "hooks", "-o", "json"], env=env, capture_output=True, text=True)
    ours = [
        p for p in json.loads(providers.stdout[providers.stdout.index("[") :]) if "clubcollect" in p["package_name"]
    ]
    conn = [h for h in json.loads(hooks.stdout[hooks.stdout.index("[") :]) if h["connection_type"] == "clubcollect"]
    print("Provider registered with Airflow:", json.dumps(ours, indent=2))
    print("Connection type:", json.dumps(conn, indent=2))
    return 0 if ours and conn else 1


if __name__ == "__main__":
    sys.exit(main())
