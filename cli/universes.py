"""universe: named universes kept in the warehouse (`universe:NAME` wherever symbols are taken). `refresh` lists a
provider's reference data (Polygon's tickers reference, filtered), `save` keeps a file or list of tickers under a
name, `list` and `show` say what is kept."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cli.options import series_options


def add_commands(sub: Any) -> None:
    u = sub.add_parser("universe", help="named universes: refresh from a vendor's reference data, save, list, show")
    family = u.add_subparsers(dest="universe_command", required=True, parser_class=type(u))

    r = family.add_parser("refresh", help="list a provider's tickers (filtered) and keep them under NAME")
    r.add_argument("name", help="the universe's name, e.g. us-common-stocks (then --symbols universe:NAME)")
    r.add_argument(
        "--provider", required=True, help="a provider that lists its symbols: polygon, databento (--parent), synthetic"
    )
    r.add_argument("--market", default="stocks", help="stocks (default), otc, indices, fx, crypto or options")
    r.add_argument(
        "--underlying",
        action="append",
        default=[],
        metavar="TICKER",
        help="polygon, --market options: every option contract of this stock, e.g. AAPL (repeat for more)",
    )
    r.add_argument("--type", default=None, help="the vendor's ticker type, e.g. CS, ETF, ADRC, PFD, WARRANT")
    r.add_argument("--exchange", default=None, help="primary exchange as a MIC, e.g. XNYS, XNAS, ARCX")
    r.add_argument("--include-inactive", action="store_true", help="delisted tickers too (default: active only)")
    r.add_argument(
        "--parent",
        action="append",
        default=[],
        metavar="ROOT.FUT",
        help="databento: every contract of a futures product, e.g. ES.FUT (repeat for more)",
    )
    r.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="provider option")
    series_options(r, series=False)
    r.set_defaults(handler=refresh)

    s = family.add_parser("save", help="keep a list of tickers (or a file of them) under NAME")
    s.add_argument("name")
    s.add_argument(
        "--symbols", required=True, help="tickers, @FILE (one per line, # comments), universe:OTHER, or several"
    )
    s.add_argument("--provider", default=None, help="check the tickers by this provider's rule (case kept)")
    series_options(s, series=False)
    s.set_defaults(handler=save)

    ls = family.add_parser("list", help="the universes kept in the warehouse")
    ls.add_argument("--json", action="store_true")
    series_options(ls, series=False)
    ls.set_defaults(handler=list_all)

    sh = family.add_parser("show", help="one universe's definition and tickers")
    sh.add_argument("name")
    sh.add_argument("--json", action="store_true")
    series_options(sh, series=False)
    sh.set_defaults(handler=show)


def refresh(args: argparse.Namespace) -> int:
    from candleflow.inputs import parse_options
    from candleflow.universes import ReferenceQuery, check_universe_name
    from cli.output import err, out
    from ingest.universes import listing_source, local_pace, refresh_universe
    from providers.errors import ProviderError
    from warehouse.engine import check_reachable
    from warehouse.universes import members_of

    name = check_universe_name(args.name)
    source = listing_source(args.provider, parse_options(args.option))
    query = ReferenceQuery(
        args.market,
        args.type,
        args.exchange,
        not args.include_inactive,
        tuple(dict.fromkeys(args.parent)),
        tuple(dict.fromkeys(args.underlying)),
    ).check()
    check_reachable(args.warehouse, writes=True)  # before the vendor is asked
    previous = members_of(args.warehouse, name)
    try:
        done = refresh_universe(
            name, source, query, args.warehouse, previous, local_pace(source.capabilities.requests_per_second)
        )
    except ProviderError as exc:
        err.print(f"candleflow: error: {exc}; universe {name!r} was left as it was", markup=False)
        return 1
    out.print(done.describe(), markup=False)
    return 0


def save(args: argparse.Namespace) -> int:
    from candleflow.inputs import ANY_PROVIDER, parse_symbols
    from candleflow.universes import check_universe_name, resolve
    from cli.output import out
    from providers import PROVIDERS, check_provider_name
    from warehouse.engine import check_reachable
    from warehouse.universes import members_of, save_universe

    name = check_universe_name(args.name)
    rule = PROVIDERS[check_provider_name(args.provider)].capabilities.symbol_rule if args.provider else ANY_PROVIDER
    entries = parse_symbols(args.symbols, rule, references=True)
    universe = resolve(entries, rule, lambda other: _named(args.warehouse, other))
    check_reachable(args.warehouse, writes=True)
    previous = members_of(args.warehouse, name)
    stored = save_universe(
        args.warehouse, name, f"saved from {', '.join(p.entry for p in universe.parts)}", universe.symbols
    )
    was = "new" if previous is None else f"was {len(previous)}"
    out.print(f"universe {name}: {stored.members} tickers saved ({was}); use --symbols universe:{name}", markup=False)
    return 0


def _named(url: str | None, name: str) -> Any:
    from flows.inputs import kept_universes

    return kept_universes(url)(name)


def list_all(args: argparse.Namespace) -> int:
    from rich.table import Table

    from cli.output import cells, out
    from warehouse.universes import list_universes

    kept = list_universes(args.warehouse)
    if args.json:
        out.print_json(
            json.dumps(
                [
                    {
                        "name": u.name,
                        "members": u.members,
                        "definition": u.definition,
                        "refreshed_at": u.refreshed_at.isoformat(),
                    }
                    for u in kept
                ]
            )
        )
        return 0
    if not kept:
        out.print("no universes kept: make one with candleflow universe refresh NAME --provider polygon (or save)")
        return 0
    table = Table("name", "tickers", "refreshed (UTC)", "from", title="candleflow universes")
    for u in kept:
        table.add_row(*cells(u.name, f"{u.members:,}", u.refreshed_at.strftime("%Y-%m-%d %H:%M"), u.definition))
    out.print(table)
    return 0


def show(args: argparse.Namespace) -> int:
    from candleflow.universes import check_universe_name
    from cli.output import out
    from warehouse.universes import load_universe

    kept = load_universe(args.warehouse, check_universe_name(args.name))
    if args.json:
        body = {
            "name": kept.name,
            "definition": kept.definition,
            "refreshed_at": kept.refreshed_at.isoformat(),
            "symbols": list(kept.symbols),
        }
        out.print_json(json.dumps(body))
        return 0
    out.print(
        f"universe {kept.name}: {kept.members:,} tickers from {kept.definition}, refreshed "
        f"{kept.refreshed_at:%Y-%m-%d %H:%M} UTC",
        markup=False,
    )
    out.file.write("".join(f"{symbol}\n" for symbol in kept.symbols))
    out.file.flush()
    return 0
