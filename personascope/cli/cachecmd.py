"""``personascope cache info|clear``: what the on-disk cache holds per kind, and deleting kinds of it."""

from __future__ import annotations

import argparse
import json

from ..errors import UsageError
from .exits import ExitCode
from .options import SharedOptions, Subparsers, add_command


def register(sub: Subparsers, shared: SharedOptions) -> None:
    """Add the ``cache`` command to ``sub``."""
    from ..config import CACHE_KINDS

    p = add_command(sub, "cache", "show the cache's size per kind, or clear kinds of it",
                    description="The on-disk cache ($PERSONASCOPE_CACHE, else ~/.cache/personascope) holds "
                                "dequantized models, fine-tuned organisms, activations, generations, scores and "
                                "judge ratings, so a rerun redoes no finished model work. 'info' shows each kind's "
                                "size; 'clear KIND...' (or --all) deletes kinds: their work is redone when next "
                                f"needed. Kinds: {', '.join(CACHE_KINDS)}.",
                    parents=[shared.json])
    p.add_argument("action", choices=["info", "clear"])
    p.add_argument("kinds", nargs="*", metavar="KIND", help="with clear: cache kinds to delete")
    p.add_argument("--all", action="store_true", help="with clear: delete every kind")
    p.set_defaults(handler=run_cache)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def run_cache(args: argparse.Namespace) -> int:
    """``personascope cache info`` (size per kind) or ``cache clear KIND... | --all``."""
    from ..config import CACHE_KINDS, cache_dir, cache_usage, clear_cache

    if args.action == "info":
        if args.kinds or args.all:
            raise UsageError("'personascope cache info' takes no kinds; use 'personascope cache clear KIND'")
        rows = cache_usage()
        if args.json:
            print(json.dumps({"root": str(cache_dir()), "kinds": rows}, indent=1))
            return ExitCode.OK
        print(f"cache: {cache_dir()}")
        for r in rows:
            print(f"{r['kind']:<12} {_mb(int(r['bytes'])):>12} {int(r['files']):>7} files  {r['holds']}")
        print(f"{'total':<12} {_mb(sum(int(r['bytes']) for r in rows)):>12}")
        return ExitCode.OK
    if args.all == bool(args.kinds):
        raise UsageError(f"'personascope cache clear' needs kinds or --all (not both); kinds: {', '.join(CACHE_KINDS)}")
    kinds = list(CACHE_KINDS) if args.all else args.kinds
    freed = clear_cache(kinds)
    if args.json:
        print(json.dumps({"cleared": kinds, "bytes": freed}))
    else:
        print(f"cleared {', '.join(kinds)}: {_mb(freed)} freed")
    return ExitCode.OK


__all__ = ["register", "run_cache"]
