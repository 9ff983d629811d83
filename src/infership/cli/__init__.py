"""The ``infership`` command.

Each subcommand lives in its own module and is imported only when it runs, so
``infership --help`` stays fast and a command's heavy imports (onnxruntime, grpc, an
engine client) are paid only by that command.
"""

from __future__ import annotations

import importlib

import click

from infership import __version__

# name -> "module:attribute"; one line per subcommand.
COMMANDS: dict[str, str] = {
    "serve": "infership.cli.serve:serve",
    "monitoring": "infership.cli.monitoring:monitoring",
    "build": "infership.cli.build:build",
    "compose": "infership.cli.compose:compose",
    "probe": "infership.cli.probe:probe",
    "bench": "infership.cli.bench:bench",
    "plan": "infership.cli.plan:plan",
    "keys": "infership.cli.keys:keys",
    "sign": "infership.cli.sign:sign",
    "verify": "infership.cli.verify:verify",
    "encrypt": "infership.cli.encrypt:encrypt",
    "keygen": "infership.cli.keygen:keygen",
    "optimize": "infership.cli.optimize:optimize",
    "deploy": "infership.cli.deploy:deploy",
    "status": "infership.cli.deploy:status",
    "rollback": "infership.cli.deploy:rollback_command",
    "delete": "infership.cli.deploy:delete",
    "manifests": "infership.cli.manifests:manifests",
    "import": "infership.cli.importing:import_command",
    "verify-parity": "infership.cli.importing:verify_parity",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="infership")
def main() -> None:
    """Turn a trained model into a fast, observable inference service."""
