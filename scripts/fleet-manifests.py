#!/usr/bin/env python3
"""Writes a fleet of Tenant and Subscription manifests for measuring `evaluate` and `report`
offline (docs/design/performance.md): N tenants with two services each and 2N subscriptions, the
same population as `population()` in benches/load.rs. Subscription dates are relative to `--now`
and cycle through Pending, Active, ExpiringSoon, GracePeriod and Expired (the base service and
the add-on on different cycles), so the output depends only on the arguments.

  fleet-manifests.py DIR                        100,000 tenants in 100 multi-document YAML files
  fleet-manifests.py DIR --tenants 1000 --files 10
  fleet-manifests.py DIR --json                 the same objects as v1 `List`s in .json files

Each tenant's subscriptions are written in the same file as the tenant, after it. DIR is created
if needed; files named fleet-NNNN.* in it are overwritten.

Only the standard library.
"""
import argparse
import datetime
import json
import pathlib
import sys

GROUP_VERSION = "mailsec.io/v1alpha1"
ESG = "email-safeguard"
ETDR = "email-threat-detection-response"


def dates(now: datetime.date, k: int) -> tuple[str, str]:
    """(startDate, endDate) of phase cycle position `k`, as in benches/load.rs."""
    start, end = [
        (10, 400),  # Pending (the product is then missing)
        (-100, 365),  # Active
        (-100, 10),  # ExpiringSoon
        (-400, -10),  # GracePeriod
        (-400, -60),  # Expired
    ][k % 5]
    day = lambda days: (now + datetime.timedelta(days=days)).isoformat()
    return day(start), day(end)


def tenant(name: str) -> dict:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {
            "users": 10,
            "admins": [{"email": f"admin@{name}.example"}],
            "services": [{"product": ESG}, {"product": ETDR}],
        },
    }


def subscription(name: str, owner: str, product: str, start: str, end: str) -> dict:
    return {
        "apiVersion": GROUP_VERSION,
        "kind": "Subscription",
        "metadata": {"name": name},
        "spec": {
            "tenantRef": owner,
            "product": product,
            "plan": "Paid",
            "startDate": start,
            "endDate": end,
            "seats": 50,
        },
    }


def objects(i: int, now: datetime.date) -> list[dict]:
    """Tenant `i` and its two subscriptions."""
    name = f"t-{i:05}"
    # Mostly active base subscriptions, like a real population.
    esg = dates(now, 1 if i % 2 == 0 else i // 2)
    etdr = dates(now, i // 3)
    return [
        tenant(name),
        subscription(f"{name}-esg", name, ESG, *esg),
        subscription(f"{name}-etdr", name, ETDR, *etdr),
    ]


def yaml_document(obj: dict) -> str:
    """The YAML of one of the objects above (strings that YAML would read as dates are quoted)."""
    meta, spec = obj["metadata"], obj["spec"]
    lines = [
        f"apiVersion: {obj['apiVersion']}",
        f"kind: {obj['kind']}",
        "metadata:",
        f"  name: {meta['name']}",
        "spec:",
    ]
    if obj["kind"] == "Tenant":
        lines.append(f"  users: {spec['users']}")
        lines.append("  admins:")
        lines.extend(f"    - email: {a['email']}" for a in spec["admins"])
        lines.append("  services:")
        lines.extend(f"    - product: {s['product']}" for s in spec["services"])
    else:
        for key in ("tenantRef", "product", "plan"):
            lines.append(f"  {key}: {spec[key]}")
        for key in ("startDate", "endDate"):
            lines.append(f'  {key}: "{spec[key]}"')
        lines.append(f"  seats: {spec['seats']}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", type=pathlib.Path, help="directory to write into")
    parser.add_argument("--tenants", type=int, default=100_000, help="N (default 100000)")
    parser.add_argument("--files", type=int, default=100, help="files to spread them over")
    parser.add_argument(
        "--now",
        type=datetime.date.fromisoformat,
        default=datetime.date(2026, 11, 29),
        help="the date the phases are relative to (default 2026-11-29)",
    )
    parser.add_argument("--json", action="store_true", help="write v1 Lists as .json")
    args = parser.parse_args()
    if args.tenants < 0 or args.files < 1:
        parser.error("--tenants must be ≥ 0 and --files ≥ 1")

    args.dir.mkdir(parents=True, exist_ok=True)
    per_file = -(-args.tenants // args.files) if args.tenants else 0
    for f in range(args.files):
        first, last = f * per_file, min((f + 1) * per_file, args.tenants)
        items = [o for i in range(first, last) for o in objects(i, args.now)]
        if args.json:
            text = json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=1)
            path = args.dir / f"fleet-{f:04}.json"
            path.write_text(text + "\n")
        else:
            path = args.dir / f"fleet-{f:04}.yaml"
            path.write_text("".join("---\n" + yaml_document(o) for o in items))
    total = args.tenants
    print(
        f"{args.dir}: {total} tenants, {2 * total} subscriptions in {args.files} files",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
