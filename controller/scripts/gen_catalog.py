#!/usr/bin/env python3
"""Generate the built-in AWS EC2 instance-type catalog for us-east-1.

Output: ``controller/src/cloud/aws-us-east-1.json`` (embedded by
``controller/src/cloud/catalog.rs``).

Inputs
------
* ``moto/ec2/resources/instance_types.json.gz``: DescribeInstanceTypes data as
  shipped by the PyPI package ``moto`` (pinned in ``requirements.txt`` next to
  this script). The package is located with ``importlib.util.find_spec`` and
  its data files are read directly; moto itself is not imported.
* ``moto/ec2/resources/instance_type_offerings/availability-zone/us-east-1.json.gz``:
  the (instance type, zone) offerings for us-east-1.
* ``--prices`` (default ``<repo>/../shared/data/aws-on-demand-prices.json``):
  ``{"unit": "USD/hour", "regions": {"us-east-1": {"m5.large": 0.096, ...}}}``.

Usage (with the repository venv)::

    .venv/bin/pip install -r controller/scripts/requirements.txt
    .venv/bin/python controller/scripts/gen_catalog.py          # (re)write the file
    .venv/bin/python controller/scripts/gen_catalog.py --check  # exit 1 if stale

Selection and field rules
-------------------------
* Only instance types offered in at least one us-east-1 zone are included.
* ``architecture``: ``amd64`` when the type supports ``x86_64`` (``i386`` as an
  extra is ignored), else ``arm64`` when it supports ``arm64``. Types with no
  such architecture (``i386`` only, mac types with ``x86_64_mac`` /
  ``arm64_mac``) are skipped.
* ``vcpu`` = ``VCpuInfo.DefaultVCpus``; ``memoryMib`` = ``MemoryInfo.SizeInMiB``.
* ``gpus``: ``GpuInfo.Gpus[]`` as ``{name, manufacturer, count, memoryMib}``.
  ``inferenceAccelerators``: ``InferenceAcceleratorInfo.Accelerators[]`` and
  ``neuronDevices``: ``NeuronInfo.NeuronDevices[]``, both as
  ``{name, manufacturer, count}``; Neuron devices carry no manufacturer in the
  data, so ``"AWS"`` is recorded. Manufacturer strings are otherwise copied
  verbatim (e.g. ``"NVIDIA"``). Each list key is omitted when empty. Note that
  inf1 types list their Inferentia chips in both places. FPGA and media
  accelerators are not recorded.
* ``maxEnis`` = ``NetworkInfo.MaximumNetworkInterfaces`` (all network cards);
  ``ipv4PerEni`` = ``NetworkInfo.Ipv4AddressesPerInterface``.
* ``hypervisor``: ``Hypervisor`` (``"nitro"`` / ``"xen"``), ``""`` when absent
  (bare metal); ``bareMetal`` = ``BareMetal``.
* ``localNvmeGb``: ``InstanceStorageInfo.TotalSizeInGB`` when the instance
  store has ``NvmeSupport`` ``"required"`` or ``"supported"`` and all of its
  disks are ``ssd``; 0 otherwise (no instance store, HDD, or non-NVMe SSD).
* ``networkBandwidthMbps``: the sum over ``NetworkInfo.NetworkCards[]`` of
  ``BaselineBandwidthInGbps * 1000``, rounded (the sustained baseline, not the
  "Up to" burst: m5.large is 750). If no card reports a baseline, the
  ``NetworkPerformance`` string is parsed instead ("25 Gigabit" -> 25000,
  "Up to 10 Gigabit" -> 10000, "4x 100 Gigabit" -> 400000, "Low" / "Moderate"
  / "High" and other words -> 0).
* ``supportedUsageClasses``: sorted ``SupportedUsageClasses``.
* ``encryptionInTransit``: ``NetworkInfo.EncryptionInTransitSupported``, false
  if absent.
* ``zones``: sorted us-east-1 zone names offering the type.
* ``onDemandPrice``: USD/hour from the prices file, ``null`` when unknown.

Output format: a JSON array sorted by ``name``, one compact object per line
with a fixed key order, ASCII only, trailing newline.
"""

from __future__ import annotations

import argparse
import difflib
import gzip
import importlib.metadata
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import NoReturn

REGION = "us-east-1"
SCRIPT_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPT_DIR.parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "controller" / "src" / "cloud" / f"aws-{REGION}.json"
DEFAULT_PRICES = REPO_ROOT.parent / "shared" / "data" / "aws-on-demand-prices.json"
REQUIREMENTS = SCRIPT_DIR / "requirements.txt"

INSTANCE_TYPES = ("ec2", "resources", "instance_types.json.gz")
ZONE_OFFERINGS = (
    "ec2",
    "resources",
    "instance_type_offerings",
    "availability-zone",
    f"{REGION}.json.gz",
)


def warn(msg: str) -> None:
    print(f"gen_catalog: warning: {msg}", file=sys.stderr)


def fail(msg: str) -> NoReturn:
    print(f"gen_catalog: error: {msg}", file=sys.stderr)
    sys.exit(2)


def pinned_moto_version() -> str | None:
    """Return the moto version pinned in requirements.txt, if any."""
    try:
        text = REQUIREMENTS.read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        m = re.match(r"^\s*moto(\[[^\]]*\])?\s*==\s*([^\s;#]+)", line)
        if m:
            return m.group(2)
    return None


def moto_root() -> Path:
    """Locate the installed moto package without importing it."""
    spec = importlib.util.find_spec("moto")
    if spec is None or not spec.submodule_search_locations:
        fail("moto is not installed; run: .venv/bin/pip install -r " + str(REQUIREMENTS))
    installed = importlib.metadata.version("moto")
    pinned = pinned_moto_version()
    if pinned is None:
        warn(f"no moto pin found in {REQUIREMENTS}")
    elif installed != pinned:
        warn(f"installed moto {installed} differs from pinned {pinned}; output may differ")
    return Path(list(spec.submodule_search_locations)[0])


def load_json(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        fail(f"cannot read {path}: {e}")


def architecture(archs: list[str]) -> str | None:
    if "x86_64" in archs:
        return "amd64"
    if "arm64" in archs:
        return "arm64"
    return None


_PERF = re.compile(r"^(?:Up to\s+)?(?:(\d+)x\s+)?(\d+(?:\.\d+)?)\s+Gigabit$")


def parse_network_performance(perf: str) -> int:
    m = _PERF.match(perf.strip())
    if not m:
        return 0
    multiplier = int(m.group(1)) if m.group(1) else 1
    return round(multiplier * float(m.group(2)) * 1000)


def network_bandwidth_mbps(net: dict) -> int:
    baselines = [
        c["BaselineBandwidthInGbps"]
        for c in net.get("NetworkCards", [])
        if isinstance(c.get("BaselineBandwidthInGbps"), (int, float))
    ]
    if baselines:
        return round(sum(baselines) * 1000)
    return parse_network_performance(net.get("NetworkPerformance", ""))


def local_nvme_gb(info: dict) -> int:
    storage = info.get("InstanceStorageInfo")
    if not storage:
        return 0
    if storage.get("NvmeSupport") not in ("required", "supported"):
        return 0
    disks = storage.get("Disks", [])
    if not disks or any(d.get("Type") != "ssd" for d in disks):
        return 0
    return int(storage.get("TotalSizeInGB", 0))


def gpus(info: dict) -> list[dict]:
    out = []
    for g in (info.get("GpuInfo") or {}).get("Gpus", []):
        out.append(
            {
                "name": g["Name"],
                "manufacturer": g["Manufacturer"],
                "count": g["Count"],
                "memoryMib": g.get("MemoryInfo", {}).get("SizeInMiB", 0),
            }
        )
    return out


def inference_accelerators(info: dict) -> list[dict]:
    return [
        {"name": a["Name"], "manufacturer": a["Manufacturer"], "count": a["Count"]}
        for a in (info.get("InferenceAcceleratorInfo") or {}).get("Accelerators", [])
    ]


def neuron_devices(info: dict) -> list[dict]:
    return [
        {"name": n["Name"], "manufacturer": "AWS", "count": n["Count"]}
        for n in (info.get("NeuronInfo") or {}).get("NeuronDevices", [])
    ]


def build_entry(info: dict, zones: list[str], price) -> dict | None:
    arch = architecture(info["ProcessorInfo"]["SupportedArchitectures"])
    if arch is None:
        return None
    net = info["NetworkInfo"]
    entry: dict = {
        "name": info["InstanceType"],
        "architecture": arch,
        "vcpu": info["VCpuInfo"]["DefaultVCpus"],
        "memoryMib": info["MemoryInfo"]["SizeInMiB"],
    }
    for key, values in (
        ("gpus", gpus(info)),
        ("inferenceAccelerators", inference_accelerators(info)),
        ("neuronDevices", neuron_devices(info)),
    ):
        if values:
            entry[key] = values
    entry.update(
        {
            "maxEnis": net["MaximumNetworkInterfaces"],
            "ipv4PerEni": net["Ipv4AddressesPerInterface"],
            "hypervisor": info.get("Hypervisor") or "",
            "bareMetal": bool(info.get("BareMetal", False)),
            "localNvmeGb": local_nvme_gb(info),
            "networkBandwidthMbps": network_bandwidth_mbps(net),
            "supportedUsageClasses": sorted(info.get("SupportedUsageClasses", [])),
            "encryptionInTransit": bool(net.get("EncryptionInTransitSupported", False)),
            "zones": zones,
            "onDemandPrice": price,
        }
    )
    return entry


def generate(prices_path: Path) -> tuple[str, int, list[str]]:
    """Return the catalog text, its entry count and the skipped offered types."""
    root = moto_root()
    types = load_json(root.joinpath(*INSTANCE_TYPES))
    offerings = load_json(root.joinpath(*ZONE_OFFERINGS))
    prices_doc = load_json(prices_path)
    if prices_doc.get("unit") != "USD/hour":
        fail(f"{prices_path}: unexpected unit {prices_doc.get('unit')!r}")
    prices = prices_doc.get("regions", {}).get(REGION)
    if not isinstance(prices, dict):
        fail(f"{prices_path}: no prices for {REGION}")

    zones_by_type: dict[str, set[str]] = {}
    for o in offerings:
        zones_by_type.setdefault(o["InstanceType"], set()).add(o["Location"])

    entries, skipped = [], []
    for name in sorted(zones_by_type):
        info = types.get(name)
        if info is None:
            warn(f"{name} is offered in {REGION} but missing from instance_types.json")
            skipped.append(name)
            continue
        entry = build_entry(info, sorted(zones_by_type[name]), prices.get(name))
        if entry is None:
            skipped.append(name)
            continue
        entries.append(entry)

    if not entries:
        fail(f"no instance types offered in {REGION}")
    lines = [json.dumps(e, separators=(",", ":"), ensure_ascii=True) for e in entries]
    return "[\n" + ",\n".join(lines) + "\n]\n", len(entries), skipped


def diff_summary(old: str, new: str) -> str:
    def by_name(text: str) -> dict[str, str]:
        out = {}
        for line in text.splitlines():
            m = re.match(r'^\{"name":"([^"]+)"', line)
            if m:
                out[m.group(1)] = line.rstrip(",")
        return out

    a, b = by_name(old), by_name(new)
    added = sorted(set(b) - set(a))
    removed = sorted(set(a) - set(b))
    changed = sorted(n for n in set(a) & set(b) if a[n] != b[n])

    def fmt(label: str, names: list[str]) -> str:
        head = ", ".join(names[:10]) + (f", ... (+{len(names) - 10})" if len(names) > 10 else "")
        return f"  {label}: {len(names)}" + (f" [{head}]" if names else "")

    parts = [fmt("added", added), fmt("removed", removed), fmt("changed", changed)]
    if not (added or removed or changed):
        # Formatting-only difference: show the first few differing lines.
        diff = list(
            difflib.unified_diff(
                old.splitlines(), new.splitlines(), "committed", "generated", n=0, lineterm=""
            )
        )
        parts.append("  formatting differs:\n    " + "\n    ".join(d[:200] for d in diff[:8]))
    return "\n".join(parts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--prices",
        type=Path,
        default=DEFAULT_PRICES,
        help="on-demand prices JSON (default: %(default)s)",
    )
    p.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="catalog file (default: %(default)s)"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if the catalog file is not up to date; do not write it",
    )
    args = p.parse_args()

    text, count, skipped = generate(args.prices)
    if args.check:
        try:
            current = args.output.read_text(encoding="utf-8")
        except FileNotFoundError:
            print(
                f"gen_catalog: {args.output} does not exist; run gen_catalog.py to create it",
                file=sys.stderr,
            )
            return 1
        if current != text:
            print(
                f"gen_catalog: {args.output} is out of date; "
                "run controller/scripts/gen_catalog.py\n"
                + diff_summary(current, text),
                file=sys.stderr,
            )
            return 1
        print(f"gen_catalog: {args.output} is up to date ({count} instance types)")
        return 0

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(
        f"gen_catalog: wrote {args.output} ({count} instance types, {len(text.encode())} bytes; "
        f"skipped {len(skipped)} offered types without amd64/arm64 data: {', '.join(skipped)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
