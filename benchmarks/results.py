"""Raw benchmark results as JSON under benchmarks/results/, so figures can be compared run to run.

Each file holds the benchmark's name, the command that produced it, the date, the device (GPU name or CPU model and
thread count), the torch / transformers / llada versions, the options and every figure of the run.
"""

import datetime
import json
import platform
import re
import sys
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({model}, {torch.get_num_threads()} threads)"


def environment(device) -> dict:
    import transformers

    import llada

    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "llada": getattr(llada, "__version__", "unknown"),
        "python": platform.python_version(),
    }


def write_results(name: str, device, options: dict, figures, out_dir: Path | None = None) -> Path:
    """Write one run's figures to `<out_dir>/<name>-<device>-<UTC time>.json` and return the path."""
    now = datetime.datetime.now(datetime.timezone.utc)
    env = environment(device)
    record = {
        "benchmark": name,
        "command": "python " + " ".join(sys.argv),
        "date": now.isoformat(timespec="seconds"),
        **env,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()},
        "figures": figures,
    }
    slug = re.sub(r"[^A-Za-z0-9]+", "-", env["device"].split(" (")[0]).strip("-").lower()
    out_dir = Path(out_dir) if out_dir is not None else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{slug}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"results written to {path}")
    return path
