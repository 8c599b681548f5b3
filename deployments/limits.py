"""Create candleflow's Prefect global concurrency limits for a provider and a warehouse.

    python -m deployments.limits --provider synthetic --warehouse postgresql+psycopg://host/db \\
        --requests-per-second 5 --warehouse-slots 8

Every flow run then rate-limits its fetches and caps its concurrent loads through these limits, across all
workers. See tasks/limits.py for why they are opt-in.
"""

from __future__ import annotations

import argparse

from providers import PROVIDERS, check_provider_name
from tasks.limits import create_limits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments.limits", description=__doc__.splitlines()[0])
    parser.add_argument("--provider", required=True)
    parser.add_argument("--warehouse", default=None, help="SQLAlchemy URL (default: CANDLEFLOW_WAREHOUSE_URL)")
    parser.add_argument(
        "--requests-per-second",
        type=float,
        default=None,
        help="the vendor's request budget (default: the provider's own)",
    )
    parser.add_argument("--warehouse-slots", type=int, default=4, help="concurrent loads into the warehouse")
    args = parser.parse_args(argv)
    provider = check_provider_name(args.provider)
    rate = args.requests_per_second or PROVIDERS[provider].capabilities.requests_per_second
    names = create_limits(provider, args.warehouse, requests_per_second=rate, warehouse_slots=args.warehouse_slots)
    print(f"limits ready: {names.provider} ({rate}/s), {names.warehouse} ({args.warehouse_slots} slots)")


if __name__ == "__main__":
    main()
