"""The ``metabench`` command line: list environments, prepare and verify data."""

from __future__ import annotations

import argparse
import json
import sys

from gymnasium.envs.registration import registry

from metabench import ENV_IDS, data, splits


def _task_description(kwargs: dict) -> str:
    if "n_way" in kwargs:
        return f"{kwargs['n_way']}-way {kwargs['k_shot']}-shot, {kwargs['n_query']} queries/class"
    return f"{kwargs['k_shot']}-shot regression, {kwargs['n_query']} queries"


def _protocol_description(kwargs: dict) -> str:
    if "scheme" in kwargs:
        return f"split={kwargs['scheme']}/{kwargs['split']}, images={kwargs['preprocessing']}"
    return "A~U[0.1,5], phase~U[0,pi], x~U[-5,5]"


def cmd_envs(args: argparse.Namespace) -> int:
    """Print every registered metabench environment with its task and protocol."""
    rows = []
    for env_id in ENV_IDS:
        kwargs = registry[env_id].kwargs
        rows.append((env_id, _task_description(kwargs), _protocol_description(kwargs)))
    if args.json:
        print(json.dumps([registry[env_id].kwargs | {"id": env_id} for env_id in ENV_IDS], indent=1))
        return 0
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in [("id", "task", "protocol (defaults)"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print("\nOmniglot split schemes (pass scheme=..., split='train'|'val'|'test' to gym.make):")
    for scheme in splits.SCHEMES:
        hashes = ", ".join(f"{s}={splits.manifest_sha256(scheme, s)[:12]}" for s in splits.SPLITS)
        print(f"  {scheme}: {splits.describe(scheme)}\n    manifest sha256: {hashes}")
    return 0


def cmd_data_where(args: argparse.Namespace) -> int:
    """Say where raw data is read from and where the preprocessed cache lives."""
    root = data.data_dir(args.root)
    print(f"raw data folder : {root if root else f'not set (pass --root or set ${data.DATA_ENV_VAR})'}")
    print(f"cache folder    : {data.cache_dir()}  (set ${data.CACHE_ENV_VAR} to move it)")
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    """Decode, verify and preprocess Omniglot into the tensor cache (downloading if asked)."""
    path = data.prepare(args.root, download_if_missing=args.download, force=args.force)
    print(f"prepared {path}")
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    """Re-decode the raw files and check every checksum."""
    report = data.verify(args.root)
    print(json.dumps(report, indent=1, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metabench",
        description="metabench: meta-learning problems as Gymnasium environments (reward = minus the query loss).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    envs = commands.add_parser("envs", help="list the registered environments and their protocols")
    envs.add_argument("--json", action="store_true", help="print the registered specs as JSON")
    envs.set_defaults(func=cmd_envs)

    data_parser = commands.add_parser(
        "data",
        help="prepare, verify or locate the Omniglot data",
        description=(
            "Omniglot is read from a local folder (--root or $METABENCH_DATA) holding either the official "
            "upstream zips (images_background.zip, images_evaluation.zip) or the npz arrays, and preprocessed "
            "once into a tensor cache ($METABENCH_CACHE)."
        ),
    )
    data_commands = data_parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    for name, func, help_text in (
        ("prepare", cmd_data_prepare, "decode, verify and cache the preprocessed tensor"),
        ("verify", cmd_data_verify, "re-check the raw files and the cache against their checksums"),
        ("where", cmd_data_where, "print the raw data and cache folders"),
    ):
        sub = data_commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--root", help=f"raw data folder (default: ${data.DATA_ENV_VAR})")
        sub.set_defaults(func=func)
        if name == "prepare":
            sub.add_argument(
                "--download", action="store_true", help="download the official upstream zips if none are found"
            )
            sub.add_argument("--force", action="store_true", help="rebuild the cache even if it is valid")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``metabench`` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except data.DataError as error:
        print(f"metabench: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
